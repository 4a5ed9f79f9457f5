"""Where events are stored and how they are buffered, read once from the environment (SPEC §29.1, §31).

An unset `CLICKHOUSE_URL` means the embedded engine (chdb) under the data directory, so a laptop, CI
and `anysentry serve` need nothing running beside the process."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = "./.anysentry"
DEFAULT_DATABASE = "anysentry"
DEFAULT_RETENTION_DAYS = 90
DEFAULT_BUFFER_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_FLUSH_INTERVAL = 2.0  # SPEC §29: "flushed about every 2 s" (a quiet writer flushes sooner)
# Books (sources, incidents, alerts, ...) are written to their state tables this often. Every write
# is an engine call (~10 ms of CPU for query analysis and a new part, whatever its size) on the cores
# the service's requests use: under ingest the counters change constantly, so not too often.
DEFAULT_STATE_FLUSH_INTERVAL = 5.0
# Rows per insert at most: every insert makes a part the engine later merges, and fewer, larger parts
# cost less engine CPU per row (13 µs at 5,000 rows, 9 µs at 20,000 on bench/ingest.py's rows).
DEFAULT_BATCH_SIZE = 20_000
DEFAULT_ENGINE_NICE = 10  # 0 leaves the embedded engine's threads at the service's priority
MAX_ENGINE_NICE = 19

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def valid_identifier(name: str) -> str:
    """Database and table names are spliced into SQL, so only plain identifiers are allowed."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"invalid ClickHouse identifier: {name!r}")
    return name


def _int_env(env: dict, key: str, default: int, minimum: int = 0) -> int:
    raw = (env.get(key) or "").strip()
    if not raw:
        return default
    try:
        return max(minimum, int(raw))
    except ValueError:
        return default


def _float_env(env: dict, key: str, default: float, minimum: float = 0.0) -> float:
    raw = (env.get(key) or "").strip()
    if not raw:
        return default
    try:
        return max(minimum, float(raw))
    except ValueError:
        return default


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = ""
    database: str = DEFAULT_DATABASE
    user: str = ""
    password: str = ""
    data_dir: str = ""
    retention_days: int = DEFAULT_RETENTION_DAYS
    buffer_max_bytes: int = DEFAULT_BUFFER_MAX_BYTES
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    state_flush_interval: float = DEFAULT_STATE_FLUSH_INTERVAL
    batch_size: int = DEFAULT_BATCH_SIZE
    chdb_dir: str = ""  # overrides `<data_dir>/chdb` (tests share one engine path per process)
    engine_nice: int = DEFAULT_ENGINE_NICE  # the embedded engine's threads yield the cores (`engine_threads`)

    def __post_init__(self) -> None:
        valid_identifier(self.database)
        object.__setattr__(self, "data_dir", str(Path(self.data_dir or DEFAULT_DATA_DIR).resolve()))
        if self.chdb_dir:
            object.__setattr__(self, "chdb_dir", str(Path(self.chdb_dir).resolve()))

    @property
    def embedded(self) -> bool:
        return not self.url

    @property
    def mode(self) -> str:
        """The `storage.mode` of /healthz (SPEC §28.1)."""
        return "embedded" if self.embedded else "clickhouse"

    @property
    def chdb_path(self) -> str:
        return self.chdb_dir or str(Path(self.data_dir) / "chdb")

    @property
    def wal_dir(self) -> str:
        return str(Path(self.data_dir) / "wal")

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> "StoreSettings":
        env = dict(os.environ if env is None else env)
        values = dict(
            url=(env.get("CLICKHOUSE_URL") or "").strip(),
            database=(env.get("CLICKHOUSE_DB") or "").strip() or DEFAULT_DATABASE,
            user=env.get("CLICKHOUSE_USER") or "",
            password=env.get("CLICKHOUSE_PASSWORD") or "",
            data_dir=(env.get("ANYSENTRY_DATA_DIR") or "").strip() or DEFAULT_DATA_DIR,
            retention_days=_int_env(env, "ANYSENTRY_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, minimum=1),
            buffer_max_bytes=_int_env(env, "ANYSENTRY_BUFFER_MAX_BYTES", DEFAULT_BUFFER_MAX_BYTES, minimum=1),
            flush_interval=_float_env(env, "ANYSENTRY_FLUSH_INTERVAL_SECS", DEFAULT_FLUSH_INTERVAL, minimum=0.01),
            batch_size=_int_env(env, "ANYSENTRY_BATCH_SIZE", DEFAULT_BATCH_SIZE, minimum=1),
            state_flush_interval=_float_env(env, "ANYSENTRY_STATE_FLUSH_SECS", DEFAULT_STATE_FLUSH_INTERVAL,
                                            minimum=0.05),
            engine_nice=min(MAX_ENGINE_NICE, _int_env(env, "ANYSENTRY_ENGINE_NICE", DEFAULT_ENGINE_NICE)),
        )
        values.update(overrides)
        return cls(**values)
