"""State tables: newest version wins, tombstones hide, config key/value."""

from __future__ import annotations

import pytest

from anysentry.store.state import ConfigStore, StateTable, next_version


def test_put_get_delete_all(store):
    alerts = StateTable(store, "alerts")
    assert alerts.get("a1") is None and alerts.all() == []
    alerts.put("a1", {"alertId": "a1", "status": "open"})
    alerts.put("a2", {"alertId": "a2", "status": "open"})
    alerts.put("a1", {"alertId": "a1", "status": "resolved"})
    assert alerts.get("a1") == {"alertId": "a1", "status": "resolved"}
    assert alerts.all() == [{"alertId": "a1", "status": "resolved"}, {"alertId": "a2", "status": "open"}]
    alerts.delete("a2")
    assert alerts.get("a2") is None
    assert [id_ for id_, _ in alerts.items()] == ["a1"]
    alerts.put("a2", {"alertId": "a2", "status": "reopened"})  # a put after a delete revives
    assert alerts.get("a2") == {"alertId": "a2", "status": "reopened"}


def test_newest_version_wins_after_merges(store):
    table = StateTable(store, "incidents")
    for n in range(5):
        table.put("i1", {"n": n})
    store.command(f"OPTIMIZE TABLE {table.table} FINAL")
    assert table.get("i1") == {"n": 4}
    assert store.query_rows(f"SELECT count() FROM {table.table}") == [(1,)]


def test_versions_strictly_increase():
    versions = [next_version() for _ in range(1000)]
    assert versions == sorted(set(versions))


def test_append_tables_record_the_fact_time(store):
    audit = StateTable(store, "audit")
    audit.put_many({"e1": {"at": 1234, "action": "x"}, "e2": {"action": "y"}})
    rows = dict(store.query_rows(f"SELECT id, at FROM {audit.table} FINAL"))
    assert rows["e1"] == 1234 and rows["e2"] > 1_000_000_000_000


def test_unknown_table_is_refused(store):
    with pytest.raises(ValueError):
        StateTable(store, "events")


def test_config_store(store):
    config = ConfigStore(store)
    assert config.get("policy", {"mode": "monitor"}) == {"mode": "monitor"}
    config.put("policy", {"mode": "enforce", "rules": []})
    config.put("flag", True)
    assert config.get("policy") == {"mode": "enforce", "rules": []}
    assert config.all() == {"flag": True, "policy": {"mode": "enforce", "rules": []}}
    config.delete("flag")
    assert config.get("flag", "gone") == "gone"


async def test_async_twins(store):
    table = StateTable(store, "sources")
    await table.aput("s1", {"sourceId": "s1"})
    assert await table.aget("s1") == {"sourceId": "s1"}
    assert await table.aall() == [{"sourceId": "s1"}]
    await table.adelete("s1")
    assert await table.aall() == []
    config = ConfigStore(store)
    await config.aput("k", [1, 2])
    assert await config.aget("k") == [1, 2]
