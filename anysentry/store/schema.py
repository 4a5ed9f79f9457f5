"""Table definitions and the additive migrations run at every start (SPEC §29).

Migrations only ever add: `CREATE … IF NOT EXISTS`, then `ADD COLUMN/INDEX IF NOT EXISTS` for whatever an
older table lacks, so any number of api replicas may start at once against one server and a newer
release never rewrites data an older one wrote. Only the retention TTL is modified in place, and one
thing is removed: secrets an older release stored (`scrub_secret_channels`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from anysentry.store.settings import valid_identifier

log = logging.getLogger(__name__)

STORED_AT = "MATERIALIZED toUnixTimestamp64Milli(now64(3))"

# (name, type and default/materialized clause) — SPEC §29.1, in order; names are AgentEvent fields.
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("schemaVersion", "LowCardinality(String)"),
    ("eventId", "String"),
    ("sourceEventId", "String DEFAULT ''"),
    ("at", "UInt64"),
    ("eventKind", "LowCardinality(String)"),
    ("eventCategory", "LowCardinality(String)"),
    ("source", "LowCardinality(String)"),
    ("subject", "String"),
    ("workspacePath", "String"),
    ("agentId", "LowCardinality(String)"),
    ("collectorId", "String"),
    ("sourceId", "String"),
    ("sessionId", "String"),
    ("userId", "String"),
    ("traceId", "String"),
    ("spanId", "String"),
    ("parentSpanId", "String"),
    ("runId", "String"),
    ("taskId", "String"),
    ("decisionStatus", "LowCardinality(String) DEFAULT 'succeeded'"),
    ("evaluationId", "String"),
    ("policyVersion", "String"),
    ("decisionUpdatedAt", "UInt64 DEFAULT at"),
    ("verdict", "LowCardinality(String)"),
    ("tier", "LowCardinality(String)"),
    ("severity", "LowCardinality(String)"),
    ("reason", "String"),
    ("actionKind", "String"),
    ("actionTarget", "String"),
    ("riskCategory", "LowCardinality(String)"),
    ("riskName", "String"),
    ("riskType", "LowCardinality(String)"),
    ("riskScore", "Float64"),
    ("tokenCount", "UInt64"),
    ("latencyMs", "Float64"),
    ("attributes", "String DEFAULT '{}'"),
    ("process", "String DEFAULT '{}'"),
    ("attribution", "String DEFAULT '{}'"),
    ("judgment", "String DEFAULT '{}'"),
    ("rawPreview", "String"),
    ("ts", "DateTime MATERIALIZED toDateTime(intDiv(at, 1000))"),
    # agent-scope reads filter on it; materialised so they never parse JSON per row
    ("classification", "LowCardinality(String) MATERIALIZED "
                       "if(attribution IN ('', 'null', '{}'), '', JSONExtractString(attribution, 'classification'))"),
    # when the store took the row (ms): the operator reads new judged events, revisions included, after
    # a cursor on it (`ops.feed`); producer time `at` cannot serve, it may be old or skewed
    ("storedAt", f"UInt64 {STORED_AT}"),
)

# Columns written by inserts (`ts` is computed by the engine).
EVENT_INSERT_COLUMNS: tuple[str, ...] = tuple(name for name, kind in EVENT_COLUMNS if "MATERIALIZED" not in kind)

# Point lookups that the sort key (at, eventId) cannot serve: pins, traces, sessions, agents.
EVENT_INDEXES: tuple[tuple[str, str], ...] = (
    ("idx_event_id", "eventId TYPE bloom_filter(0.01) GRANULARITY 4"),
    ("idx_trace_id", "traceId TYPE bloom_filter(0.01) GRANULARITY 4"),
    ("idx_session_id", "sessionId TYPE bloom_filter(0.01) GRANULARITY 4"),
    ("idx_agent_id", "agentId TYPE bloom_filter(0.01) GRANULARITY 4"),
    ("idx_stored_at", "storedAt TYPE minmax GRANULARITY 1"),
)

STATE_TABLES: tuple[str, ...] = (
    "sources",
    "collector_heartbeats",
    "incidents",
    "alerts",
    "remediations",
    "deliveries",
    "audit",
    "objectives",
    "maintenance_windows",
    "notification_channels",
    "notification_routes",
    "agent_metadata",
    "config",
)
# Append-mostly tables also carry the time of the fact they record, for range reads.
APPEND_STATE_TABLES: frozenset[str] = frozenset({"audit", "deliveries"})

STATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "String"),
    ("version", "UInt64"),
    ("deleted", "UInt8 DEFAULT 0"),
    ("updatedAt", "UInt64"),
    ("body", "String"),
)


def state_columns(table: str) -> tuple[tuple[str, str], ...]:
    return STATE_COLUMNS + ((("at", "UInt64"),) if table in APPEND_STATE_TABLES else ())


def qualified(database: str, table: str) -> str:
    return f"`{valid_identifier(database)}`.`{valid_identifier(table)}`"


# An insert (up to the writer's 20,000 rows, ~20 MB before compression) is written as a compact part,
# a few files, instead of a wide one with two files per column: creating ~100 files per insert cost
# the engine more CPU than anything else it did for it. Merges past this size write wide parts, the
# layout for reading a few columns of many rows.
WIDE_PART_BYTES = 64 << 20
_WIDE_PART_SETTING = re.compile(r"\bmin_bytes_for_wide_part\s*=\s*(\d+)")


def wide_part_bytes(engine_full: str) -> int | None:
    """The `min_bytes_for_wide_part` an `events` table was given, None when it has the default."""
    match = _WIDE_PART_SETTING.search(engine_full or "")
    return int(match.group(1)) if match else None


def _ttl_clause(retention_days: int) -> str:
    return f"ts + INTERVAL {int(retention_days)} DAY"


def events_ddl(database: str, retention_days: int) -> str:
    columns = [f"`{name}` {kind}" for name, kind in EVENT_COLUMNS]
    columns += [f"INDEX {name} {spec}" for name, spec in EVENT_INDEXES]
    # ttl_only_drop_parts: parts are per day (the partition), so expiry drops whole parts instead of
    # rewriting them row by row.
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(database, 'events')} (\n  "
        + ",\n  ".join(columns)
        + "\n) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (at, eventId)"
        + f" TTL {_ttl_clause(retention_days)}"
        + f" SETTINGS ttl_only_drop_parts = 1, min_bytes_for_wide_part = {WIDE_PART_BYTES}"
    )


def state_ddl(database: str, table: str) -> str:
    columns = ", ".join(f"`{name}` {kind}" for name, kind in state_columns(table))
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(database, table)} ({columns}) "
        "ENGINE = ReplacingMergeTree(version) ORDER BY id"
    )


_TTL_DAYS = re.compile(r"\bTTL\s+ts\s*\+\s*toIntervalDay\((\d+)\)")


def ttl_days(engine_full: str) -> int | None:
    """The retention in days of an `events` table, read back from `system.tables.engine_full`."""
    match = _TTL_DAYS.search(engine_full or "")
    return int(match.group(1)) if match else None


# Older versions of a Secret-sourced notification channel (a row of it says `source: "secret"`: stored
# without URL and key since) that still hold a webhook URL or HMAC key: written before that release,
# kept by ReplacingMergeTree until a merge. The newest version of a channel is never one.
_STORED_SECRET = (
    "(JSONExtractString(body, 'webhookUrl') != '' OR JSONExtractString(body, 'signingKey') != '')"
    " AND id IN (SELECT id FROM {table} WHERE JSONExtractString(body, 'source') = 'secret')"
    " AND (id, version) NOT IN (SELECT id, max(version) FROM {table} GROUP BY id)"
)


def scrub_secret_channels(command: Callable[[str], object], query_rows: Callable[[str, dict], list],
                          database: str) -> list[str]:
    """Delete the channel rows `_STORED_SECRET` finds (a mutation that rewrites the parts holding them,
    waited for); nothing when there is none, so it runs once. The table is small. A failure is logged
    and tried again at the next start: it must not keep the store from opening."""
    table = qualified(database, "notification_channels")
    where = _STORED_SECRET.format(table=table)
    sql = f"ALTER TABLE {table} DELETE WHERE {where} SETTINGS mutations_sync = 2"
    try:
        if not query_rows(f"SELECT count() FROM {table} WHERE {where}", {})[0][0]:
            return []
        command(sql)
    except Exception as exc:  # noqa: BLE001 - the store opens anyway
        log.warning("could not remove stored secret values from old notification channel rows: %s", exc)
        return []
    return [sql]


def migrate(
    command: Callable[[str], object],
    query_rows: Callable[[str, dict], list],
    database: str,
    retention_days: int,
) -> list[str]:
    """Bring `database` to the current shape; return the statements that changed something."""
    applied: list[str] = []

    def run(sql: str) -> None:
        command(sql)
        applied.append(sql)

    command(f"CREATE DATABASE IF NOT EXISTS `{valid_identifier(database)}`")
    command(events_ddl(database, retention_days))
    for table in STATE_TABLES:
        command(state_ddl(database, table))

    rows = query_rows(
        "SELECT table, name FROM system.columns WHERE database = {db:String}", {"db": database}
    )
    present: dict[str, set[str]] = {}
    for table, name in rows:
        present.setdefault(table, set()).add(name)

    wanted = {"events": EVENT_COLUMNS} | {table: state_columns(table) for table in STATE_TABLES}
    for table, columns in wanted.items():
        have = present.get(table, set())
        for name, kind in columns:
            if name not in have:
                run(f"ALTER TABLE {qualified(database, table)} ADD COLUMN IF NOT EXISTS `{name}` {kind}")
                if STORED_AT in kind:  # rows from before the column: stamp them once, not at every read
                    run(f"ALTER TABLE {qualified(database, table)} MATERIALIZE COLUMN `{name}`")

    indexes = {
        name
        for (name,) in query_rows(
            "SELECT name FROM system.data_skipping_indices WHERE database = {db:String} AND table = 'events'",
            {"db": database},
        )
    }
    for name, spec in EVENT_INDEXES:
        if name not in indexes:
            # New parts get the index; existing parts keep working without it (no rewrite at start).
            run(f"ALTER TABLE {qualified(database, 'events')} ADD INDEX IF NOT EXISTS {name} {spec}")

    engine = query_rows(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'events'",
        {"db": database},
    )
    if engine and ttl_days(engine[0][0]) != int(retention_days):
        run(f"ALTER TABLE {qualified(database, 'events')} MODIFY TTL {_ttl_clause(retention_days)}")
    if engine and wide_part_bytes(engine[0][0]) != WIDE_PART_BYTES:
        run(f"ALTER TABLE {qualified(database, 'events')} MODIFY SETTING min_bytes_for_wide_part = {WIDE_PART_BYTES}")
    applied += scrub_secret_channels(command, query_rows, database)
    return applied
