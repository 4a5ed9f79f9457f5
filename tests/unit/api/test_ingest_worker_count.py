"""How many ingest workers a service starts by default: the cores it may really use."""

import os

import pytest

from anysentry.api.app import ApiSettings, SettingsError
from anysentry.api.ingest_workers import MAX_DEFAULT_WORKERS, default_size, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000\n", AFFINITY),                      # no CPU limit
    ("100000 100000\n", 1),                          # limits.cpu: 1
    ("150000 100000\n", min(AFFINITY, 1)),           # 1.5 cores is one whole core
    ("50000 100000\n", 1),                           # 500m still leaves one core
    (f"{200000 * 64} 200000\n", AFFINITY),           # a limit above the machine
    ("garbage", AFFINITY),
])
def test_a_container_cpu_limit_caps_the_usable_cores(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert usable_cores(path) == expected


def test_no_cgroup_file_means_the_affinity(tmp_path):
    assert usable_cores(tmp_path / "absent") == AFFINITY


def test_the_default_pool_follows_the_cores_and_the_setting_overrides_it(monkeypatch):
    cores = usable_cores()
    assert default_size() == (0 if cores < 2 else min(cores, MAX_DEFAULT_WORKERS))
    monkeypatch.delenv("ANYSENTRY_INGEST_WORKERS", raising=False)
    assert ApiSettings.from_env().ingest_workers == default_size()
    monkeypatch.setenv("ANYSENTRY_INGEST_WORKERS", "0")
    assert ApiSettings.from_env().ingest_workers == 0
    monkeypatch.setenv("ANYSENTRY_INGEST_WORKERS", "-2")
    with pytest.raises(SettingsError, match="ANYSENTRY_INGEST_WORKERS must not be negative"):
        ApiSettings.from_env()
