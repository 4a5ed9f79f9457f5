"""The ingest workers' pipes hold a whole judged batch, so worker and service do not take turns."""

import fcntl
from pathlib import Path

import pytest

from anysentry.api.ingest_workers import PIPE_BYTES, IngestWorkers

pytestmark = pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux only")


def test_the_pools_job_and_result_pipes_are_widened():
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < PIPE_BYTES:
        pytest.skip("this machine allows no pipe as wide")
    workers = IngestWorkers(1)
    pool = workers._executor()  # the pipes exist before any worker process starts
    try:
        for queue in (pool._call_queue, pool._result_queue):
            # a CPython release that renames these would silently bring back the 64 KB turn-taking
            assert fcntl.fcntl(queue._reader.fileno(), fcntl.F_GETPIPE_SZ) >= PIPE_BYTES
    finally:
        workers.close()
