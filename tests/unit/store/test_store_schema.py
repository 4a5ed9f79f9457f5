"""Migrations: idempotent, additive, retention applied (SPEC §29.1)."""

from __future__ import annotations

import pytest

from anysentry.store import schema
from anysentry.store.client import Store, chdb_client
from anysentry.store.settings import StoreSettings
from store_helpers import count_rows, make_events


def _columns(store, table: str) -> dict[str, str]:
    rows = store.query_rows(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        {"db": store.database, "t": table},
    )
    return dict(rows)


def _migrate(store, retention: int = 90) -> list[str]:
    return schema.migrate(store.command, store.query_rows, store.database, retention)


def test_events_table_matches_the_spec(store):
    columns = _columns(store, "events")
    assert list(columns) == [name for name, _ in schema.EVENT_COLUMNS]
    assert columns["agentId"] == "LowCardinality(String)"
    assert columns["at"] == "UInt64"
    assert columns["ts"] == "DateTime"
    assert columns["riskScore"] == "Float64"
    engine = store.query_rows(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'events'",
        {"db": store.database},
    )[0][0]
    assert "PARTITION BY toYYYYMMDD(ts)" in engine
    assert "ORDER BY (at, eventId)" in engine
    assert schema.ttl_days(engine) == 90
    assert schema.wide_part_bytes(engine) == schema.WIDE_PART_BYTES
    indexes = {
        name
        for (name,) in store.query_rows(
            "SELECT name FROM system.data_skipping_indices WHERE database = {db:String}", {"db": store.database}
        )
    }
    assert indexes == {name for name, _ in schema.EVENT_INDEXES}


def test_state_tables_exist_with_their_columns(store):
    for table in schema.STATE_TABLES:
        columns = _columns(store, table)
        assert list(columns)[:5] == ["id", "version", "deleted", "updatedAt", "body"], table
        assert ("at" in columns) == (table in schema.APPEND_STATE_TABLES), table


def test_migration_is_idempotent(store):
    assert _migrate(store) == []
    assert _migrate(store) == []
    Store(store.settings).open()  # a second store on the same database and path changes nothing
    assert _migrate(store) == []


def test_migration_adds_missing_columns_to_an_older_table(store_settings):
    db = store_settings.database
    store = Store(store_settings)
    try:
        raw = chdb_client(store_settings.chdb_path)  # the shape an older release left behind
        raw.command(f"CREATE DATABASE `{db}`")
        raw.command(
            f"CREATE TABLE `{db}`.events (eventId String, at UInt64, subject String, "
            "ts DateTime MATERIALIZED toDateTime(intDiv(at, 1000))) "
            "ENGINE = MergeTree ORDER BY at TTL ts + INTERVAL 30 DAY"
        )
        raw.command(f"CREATE TABLE `{db}`.alerts (id String, version UInt64, body String) "
                    "ENGINE = ReplacingMergeTree(version) ORDER BY id")
        raw.command(f"INSERT INTO `{db}`.events (eventId, at, subject) VALUES ('old-1', toUnixTimestamp(now()) * 1000, 'x')")
        store.open()
        columns = _columns(store, "events")
        assert set(columns) >= {name for name, _ in schema.EVENT_COLUMNS}
        assert {"deleted", "updatedAt"} <= set(_columns(store, "alerts"))
        row = store.query_dicts(f"SELECT eventId, decisionStatus, attributes, decisionUpdatedAt = at AS d FROM {store.events_table}")
        assert row == [{"eventId": "old-1", "decisionStatus": "succeeded", "attributes": "{}", "d": 1}]
        engine = store.query_rows(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'events'", {"db": db}
        )[0][0]
        assert schema.ttl_days(engine) == 90  # retention brought in line
        assert schema.wide_part_bytes(engine) == schema.WIDE_PART_BYTES  # inserts written as compact parts
        assert _migrate(store) == []
    finally:
        store.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")


def test_retention_change_modifies_the_ttl(store):
    applied = _migrate(store, retention=7)
    assert any("MODIFY TTL" in sql for sql in applied)
    engine = store.query_rows(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'events'",
        {"db": store.database},
    )[0][0]
    assert schema.ttl_days(engine) == 7
    assert _migrate(store, retention=7) == []


def test_an_insert_of_the_writers_size_is_one_compact_part(store):
    """A full writer batch goes in as one part of a few files (not two per column), still read whole."""
    events = make_events(store.settings.batch_size)
    for event in events:
        event.rawPreview = "x" * 900  # ~1 KB rows like an observer line's: ~20 MB in all
    store.insert_events(events)
    parts = store.query_rows(
        "SELECT part_type, rows, data_uncompressed_bytes FROM system.parts "
        "WHERE database = {db:String} AND table = 'events' AND active", {"db": store.database})
    assert [(kind, rows) for kind, rows, _ in parts] == [("Compact", store.settings.batch_size)]
    assert parts[0][2] > 10 << 20  # over the engine's default threshold, which would have made it wide
    assert count_rows(store) == store.settings.batch_size


def test_settings_from_env(tmp_path):
    settings = StoreSettings.from_env(
        {
            "CLICKHOUSE_DB": "sentry_x",
            "ANYSENTRY_DATA_DIR": str(tmp_path / "d"),
            "ANYSENTRY_RETENTION_DAYS": "30",
            "ANYSENTRY_BUFFER_MAX_BYTES": "1048576",
            "ANYSENTRY_FLUSH_INTERVAL_SECS": "0.5",
            "ANYSENTRY_STATE_FLUSH_SECS": "10",
        }
    )
    assert settings.flush_interval == 0.5 and settings.state_flush_interval == 10.0
    assert settings.embedded and settings.mode == "embedded"
    assert settings.database == "sentry_x"
    assert settings.chdb_path == str(tmp_path / "d" / "chdb")
    assert settings.wal_dir == str(tmp_path / "d" / "wal")
    assert settings.retention_days == 30 and settings.buffer_max_bytes == 1 << 20
    defaults = StoreSettings.from_env({})
    assert defaults.database == "anysentry" and defaults.retention_days == 90
    assert defaults.buffer_max_bytes == 256 * 1024 * 1024
    assert defaults.flush_interval == 2.0 and defaults.batch_size == 20_000  # SPEC §29: about every 2 s
    assert defaults.state_flush_interval == 5.0
    assert defaults.data_dir.endswith(".anysentry") and defaults.data_dir.startswith("/")
    server = StoreSettings.from_env({"CLICKHOUSE_URL": "http://ch:8123", "CLICKHOUSE_USER": "u"})
    assert not server.embedded and server.mode == "clickhouse" and server.user == "u"


def test_database_names_are_identifiers():
    with pytest.raises(ValueError):
        StoreSettings(database="x; DROP TABLE y")
