"""`Store`: the one door to ClickHouse — a server over HTTP(S) or embedded chdb — with the same SQL.

Every statement names its table as `db.table`, so several stores with different databases can share
one chdb path in one process (a process may open only one path, for its whole life). Calls block:
async code goes through `run()` / the `a*` twins, which offload to a thread and never touch the loop."""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from anysentry.events.model import JSON_FIELDS, AgentEvent
from anysentry.store import engine_threads, event_rows, schema
from anysentry.store.settings import StoreSettings, valid_identifier
from anysentry.store.wal import write_all

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store cannot be opened or used as configured."""


# One chdb client per process per path. The client serialises calls on its engine handle with its
# own lock, so one shared client is thread-safe; opening more handles buys nothing on 2 cores.
_chdb_clients: dict[str, Any] = {}
_chdb_lock = threading.Lock()


def chdb_client(path: str):
    """The process-wide client for an embedded chdb path (created on first use)."""
    path = os.path.realpath(path)
    with _chdb_lock:
        client = _chdb_clients.get(path)
        if client is None:
            if _chdb_clients:
                other = next(iter(_chdb_clients))
                raise StoreError(f"this process already opened chdb at {other}; one chdb path per process")
            import clickhouse_connect  # imports chdb lazily: ~0.5 s and ~300 MB mapped

            os.makedirs(path, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
            _chdb_clients[path] = client
        return client


def server_client(settings: StoreSettings):
    import clickhouse_connect

    # No auto session id: a session serialises queries server-side and this client is shared by threads.
    return clickhouse_connect.get_client(
        dsn=settings.url,
        username=settings.user or None,
        password=settings.password or "",
        autogenerate_session_id=False,
        connect_timeout=5,
        send_receive_timeout=60,
    )


_INSERT_COLUMNS = schema.EVENT_INSERT_COLUMNS
_INSERT_TYPES = [kind.split(" DEFAULT")[0] for name, kind in schema.EVENT_COLUMNS if name in _INSERT_COLUMNS]
_JSON_INDEXES = tuple(_INSERT_COLUMNS.index(name) for name in JSON_FIELDS)
_AT = _INSERT_COLUMNS.index("at")
_DECISION_UPDATED_AT = _INSERT_COLUMNS.index("decisionUpdatedAt")
_row_getter = operator.attrgetter(*_INSERT_COLUMNS)


# Rows as JSON (`insert_json`): payloads of `event_rows`, parsed by the engine in C++ and matched to
# columns by the names they start with. Objects land in the String columns as their JSON text; a JSON
# field that is None is read as NULL and stored as `null`, and an unset (0) revision time as the event
# time — exactly what the column-oriented path stores, so `AgentEvent.from_dict` gives back the event
# that was written.
_JSON_COLUMNS = ", ".join(f"`{name}`" for name in _INSERT_COLUMNS)
# Dictionary-encoded columns are read as plain strings and encoded once per insert by the table:
# parsing straight into LowCardinality costs the engine a third more CPU per row.
_JSON_STRUCTURE = ", ".join(
    f"`{name}` {'Nullable(String)' if name in JSON_FIELDS else kind.replace('LowCardinality(String)', 'String')}"
    for name, kind in zip(_INSERT_COLUMNS, _INSERT_TYPES)
)
_JSON_SELECT = ", ".join(
    f"ifNull(`{name}`, 'null')" if name in JSON_FIELDS
    else "if(`decisionUpdatedAt` = 0, `at`, `decisionUpdatedAt`)" if name == "decisionUpdatedAt"
    else f"`{name}`"
    for name in _INSERT_COLUMNS
)
_JSON_SETTINGS = {"input_format_json_read_objects_as_strings": 1, "input_format_skip_unknown_fields": 1}
# The embedded engine shares the service's cores: an insert parsing on every core stalls the event
# loop for its duration (guard answers waited behind each periodic insert). One thread costs no more
# CPU per row and leaves the other cores to the loop and the ingest workers.
_EMBEDDED_JSON_SETTINGS = {**_JSON_SETTINGS, "max_threads": 1, "max_insert_threads": 1, "input_format_parallel_parsing": 0}
_EMBEDDED_JSON_SETTINGS_SQL = ", ".join(f"{key} = {value}" for key, value in _EMBEDDED_JSON_SETTINGS.items())


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_ROWS_PREFIX = "anysentry-rows-"
_PROC_FDS = os.path.isdir("/proc/self/fd")  # an anonymous file is readable by path only through /proc


def _rows_file() -> tuple[int, str, bool]:
    """(fd, path the engine reads, whether it is a named temporary file the caller removes)."""
    if hasattr(os, "memfd_create") and _PROC_FDS:
        try:
            fd = os.memfd_create("anysentry-rows", os.MFD_CLOEXEC)
        except OSError:
            pass
        else:
            return fd, f"/proc/{os.getpid()}/fd/{fd}", False
    fd, path = tempfile.mkstemp(prefix=f"{_ROWS_PREFIX}{os.getpid()}-", suffix=".json")
    return fd, path, True


def _remove_orphaned_rows() -> None:
    """Delete temporary row files left by a process that died mid-insert (named with its pid)."""
    directory = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(directory) if n.startswith(_ROWS_PREFIX)]
    except OSError:
        return
    for name in names:
        try:
            pid = int(name[len(_ROWS_PREFIX):].split("-", 1)[0])
            if pid == os.getpid():
                continue
            os.kill(pid, 0)  # raises when no such process is alive
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
        except (ValueError, PermissionError):
            continue


def _warm_insert_path() -> None:
    """clickhouse-connect imports pandas on its first `insert` (~0.5 s holding the GIL); take that
    at open, not in the middle of serving (state tables insert through it)."""
    try:
        from clickhouse_connect.driver import options

        options.pd  # noqa: B018 - resolves (imports) lazily
    except Exception:  # noqa: BLE001 - an optional speed-up only
        log.debug("could not pre-import the insert dependencies", exc_info=True)


def revision_at(event: AgentEvent) -> int:
    """The stored `decisionUpdatedAt`: an unset (0) revision time is the event time, as the column default."""
    return event.decisionUpdatedAt or event.at


def event_columns(events: list[AgentEvent]) -> list[list]:
    """Column-oriented insert data: one list per column of `EVENT_INSERT_COLUMNS`.

    JSON fields become orjson text (`None` → `null`, which reads back as `None`)."""
    columns = [list(column) for column in zip(*map(_row_getter, events))]
    dumps = orjson.dumps
    for index in _JSON_INDEXES:
        columns[index] = [dumps(value).decode() for value in columns[index]]
    revision = columns[_DECISION_UPDATED_AT]
    if not all(revision):
        columns[_DECISION_UPDATED_AT] = [r or a for r, a in zip(revision, columns[_AT])]
    return columns


class Store:
    """ClickHouse (server) or chdb (embedded) with the AnySentry schema migrated in.

    Construction does no I/O; the first call opens the backend and migrates, so a server that is
    down at boot becomes usable when it returns (the event writer keeps retrying meanwhile)."""

    def __init__(self, settings: StoreSettings | None = None):
        self.settings = settings or StoreSettings.from_env()
        self.database = valid_identifier(self.settings.database)
        self._client = None
        self._open_lock = threading.Lock()
        self._json_body: bool | None = None  # a server takes `insert_json` bodies (probed once)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def configured(self) -> bool:
        """`storage.clickhouseConfigured` of /healthz: a server URL was given."""
        return not self.settings.embedded

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> "Store":
        """Connect and migrate (idempotent); raises when the backend is unreachable."""
        if self._client is not None:
            return self
        with self._open_lock:
            if self._client is None:
                if self.settings.embedded:
                    client = chdb_client(self.settings.chdb_path)
                else:
                    client = server_client(self.settings)
                schema.migrate(
                    client.command,
                    lambda sql, params: client.query(sql, parameters=params).result_rows,
                    self.database,
                    self.settings.retention_days,
                )
                _warm_insert_path()
                if self.settings.embedded:
                    _remove_orphaned_rows()
                    engine_threads.keep_low(self.settings.engine_nice)
                self._client = client
        return self

    def close(self) -> None:
        """Release a server connection. The embedded client lives as long as the process."""
        client, self._client = self._client, None
        if client is not None and not self.settings.embedded:
            client.close()

    @property
    def client(self):
        return self.open()._client

    def table(self, name: str) -> str:
        """The qualified, quoted name of a table of this store's database, for building SQL."""
        return schema.qualified(self.database, name)

    @property
    def events_table(self) -> str:
        return self.table("events")

    def scrub_secret_channels(self) -> list[str]:
        """`schema.scrub_secret_channels` on this store (also run by every start's migration)."""
        return schema.scrub_secret_channels(self.command, self.query_rows, self.database)

    # -- generic SQL ----------------------------------------------------------------------------

    def command(self, sql: str, parameters: dict | None = None):
        return self.client.command(sql, parameters=parameters)

    def query_rows(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        """Rows as tuples. Bind values server-side with `{name:Type}` placeholders."""
        return self.client.query(sql, parameters=parameters).result_rows

    def query_dicts(self, sql: str, parameters: dict | None = None) -> list[dict]:
        return list(self.client.query(sql, parameters=parameters).named_results())

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            log.debug("store ping failed", exc_info=True)
            return False

    # -- events ---------------------------------------------------------------------------------

    def insert_events(self, events: list[AgentEvent]) -> int:
        """Insert one batch (serialised once as rows, then `insert_json`)."""
        if not events:
            return 0
        self.insert_json([event_rows.payload(events)])
        return len(events)

    def insert_json(self, payloads: Sequence[bytes | bytearray]) -> None:
        """Insert, as one statement, the events of `event_rows` payloads — the bytes the writer
        already has for its log. The engine parses them (C++, no Python per row): chdb reads them
        from a temporary file through `file()`, a server from the request body through `input()`;
        both store exactly what `event_columns` would."""
        parts = event_rows.insert_buffers(payloads)
        if not parts:
            return
        if self.settings.embedded:
            self._insert_json_file(parts)
            return
        if self._json_body is None:
            self._json_body = self._probe_json_body()
        if self._json_body:
            self._insert_json_body(b"".join(parts))
        else:  # a server that refuses the JSON insert: the column-oriented path
            self._insert_columns([event for payload in payloads for event in event_rows.decode(payload)])

    def _insert_json_body(self, data: bytes) -> None:
        """Rows sent as the request body of `INSERT … SELECT … FROM input(…)` (a server over HTTP)."""
        self.client.command(
            f"INSERT INTO {self.events_table} ({_JSON_COLUMNS}) SELECT {_JSON_SELECT} "
            f"FROM input('{_JSON_STRUCTURE}') FORMAT {event_rows.INSERT_FORMAT}",
            data=bytes(data),
            settings=_JSON_SETTINGS,
        )

    def _probe_json_body(self) -> bool:
        """Whether the server takes the JSON insert: try it once with no row (inserts nothing).
        An unreachable server raises (decided on a later try); a refusal selects the column path."""
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        try:
            self._insert_json_body(event_rows.NAMES)
        except OperationalError:
            raise
        except DatabaseError as error:
            log.warning("the server refuses JSON inserts (%s); inserting column-oriented instead", error)
            return False
        return True

    def _insert_columns(self, events: list[AgentEvent]) -> None:
        if events:
            self.client.insert(
                self.events_table,
                event_columns(events),
                column_names=list(_INSERT_COLUMNS),
                column_type_names=_INSERT_TYPES,  # known types: no DESCRIBE round trip per insert
                column_oriented=True,
            )

    def _insert_json_file(self, parts: list) -> None:
        """Rows read by the engine from a temporary file (chdb: no copy into the SQL text). An
        anonymous in-memory file where Linux has one: no disk writeback of rows that are already in
        the log, and nothing left behind by a crash."""
        fd, path, named = _rows_file()
        try:
            try:
                write_all(fd, parts)
            finally:
                if named:  # the engine opens it by name
                    os.close(fd)
            self.client.command(
                f"INSERT INTO {self.events_table} ({_JSON_COLUMNS}) SELECT {_JSON_SELECT} "
                f"FROM file({_sql_string(path)}, '{event_rows.INSERT_FORMAT}', '{_JSON_STRUCTURE}') "
                f"SETTINGS {_EMBEDDED_JSON_SETTINGS_SQL}"
            )
        finally:
            if named:
                os.unlink(path)
            else:
                os.close(fd)

    def latest_events(self, event_ids: Iterable[str]) -> dict[str, AgentEvent]:
        """The latest decision revision of each given event id (absent ids are simply missing)."""
        ids = sorted(set(event_ids))
        if not ids:
            return {}
        rows = self.query_dicts(
            f"SELECT * FROM {self.events_table} WHERE eventId IN {{ids:Array(String)}} "
            "ORDER BY decisionUpdatedAt DESC LIMIT 1 BY eventId",
            {"ids": ids},
        )
        return {row["eventId"]: AgentEvent.from_dict(row) for row in rows}

    def existing_revisions(self, events: list[AgentEvent]) -> set[tuple[str, int]]:
        """Which (eventId, decisionUpdatedAt) of these events are already stored (replay dedupe).

        The `at` range of the batch bounds the scan by the sort key; the bloom index does the rest."""
        if not events:
            return set()
        ats = [e.at for e in events]
        rows = self.query_rows(
            f"SELECT eventId, decisionUpdatedAt FROM {self.events_table} "
            "WHERE at BETWEEN {lo:UInt64} AND {hi:UInt64} AND eventId IN {ids:Array(String)}",
            {"lo": min(ats), "hi": max(ats), "ids": sorted({e.eventId for e in events})},
        )
        return {(event_id, revision) for event_id, revision in rows}

    def count_distinct_events(self, since_ms: int | None = None) -> int:
        where = "" if since_ms is None else " WHERE at >= {since:UInt64}"
        params = None if since_ms is None else {"since": int(since_ms)}
        rows = self.query_rows(f"SELECT uniqExact(eventId) FROM {self.events_table}{where}", params)
        return int(rows[0][0]) if rows else 0

    # -- async twins (thread offload; chdb and HTTP calls block) --------------------------------

    async def run(self, fn: Callable, *args, **kwargs):
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def aopen(self) -> "Store":
        return await asyncio.to_thread(self.open)

    async def acommand(self, sql: str, parameters: dict | None = None):
        return await asyncio.to_thread(self.command, sql, parameters)

    async def aquery_rows(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        return await asyncio.to_thread(self.query_rows, sql, parameters)

    async def aquery_dicts(self, sql: str, parameters: dict | None = None) -> list[dict]:
        return await asyncio.to_thread(self.query_dicts, sql, parameters)

    async def aping(self) -> bool:
        return await asyncio.to_thread(self.ping)

    async def ainsert_events(self, events: list[AgentEvent]) -> int:
        return await asyncio.to_thread(self.insert_events, events)

    async def alatest_events(self, event_ids: Iterable[str]) -> dict[str, AgentEvent]:
        return await asyncio.to_thread(self.latest_events, list(event_ids))

    async def acount_distinct_events(self, since_ms: int | None = None) -> int:
        return await asyncio.to_thread(self.count_distinct_events, since_ms)

