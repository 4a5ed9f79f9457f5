"""Store: inserts, latest decision revision per event, JSON round trip, shared chdb client."""

from __future__ import annotations

import asyncio

import pytest
from store_helpers import count_rows, make_event, make_events

from anysentry.events.model import AgentEvent
from anysentry.store.client import Store, StoreError, chdb_client, event_columns
from anysentry.store.settings import StoreSettings


def test_insert_and_latest_revision_wins(store):
    first = make_event("evt_a", decisionStatus="pending", verdict="escalate", reason="awaiting L1/L2 judgment")
    final = AgentEvent.from_dict(
        first.to_dict() | {"decisionStatus": "succeeded", "verdict": "block", "reason": "L2: bad",
                           "decisionUpdatedAt": first.at + 500, "tier": "Llm"}
    )
    # Insert the newer revision first: ordering by decisionUpdatedAt, not by arrival, decides.
    assert store.insert_events([final]) == 1
    store.insert_events([first, make_event("evt_b")])
    assert count_rows(store) == 3
    latest = store.latest_events(["evt_a", "evt_b", "evt_missing"])
    assert set(latest) == {"evt_a", "evt_b"}
    assert latest["evt_a"].verdict == "block" and latest["evt_a"].decisionStatus == "succeeded"
    assert latest["evt_a"].decisionUpdatedAt == first.at + 500
    assert store.count_distinct_events() == 2
    assert store.count_distinct_events(since_ms=first.at + 10_000_000) == 0
    assert store.latest_events([]) == {}


def test_json_fields_round_trip_into_agent_event(store):
    event = make_event(
        "evt_json",
        attributes={"pid": 42, "argv": "curl x | sh", "ok": True, "ratio": 0.5, "uni": "ü→"},
        process={"pid": 42, "comm": "bash", "argv": ["bash", "-c", "x"]},
        attribution={"monitored": True, "classification": "confirmed_agent", "confidence": 1},
        judgment=None,
        riskScore=87.5,
        tokenCount=12,
        latencyMs=3.25,
        rawPreview='{"event":{"ToolExec":{}}}',
    )
    store.insert_events([event])
    back = store.latest_events(["evt_json"])["evt_json"]
    assert back == event
    row = store.query_dicts(f"SELECT attributes, judgment FROM {store.events_table}")[0]
    assert row["judgment"] == "null"
    assert AgentEvent.from_dict(store.query_dicts(f"SELECT * FROM {store.events_table}")[0]) == event


def test_unset_revision_time_is_the_event_time(store):
    event = make_event("evt_rev0", decisionUpdatedAt=0)
    assert event_columns([event])[22][0] == event.at
    store.insert_events([event])
    assert store.latest_events(["evt_rev0"])["evt_rev0"].decisionUpdatedAt == event.at
    assert store.existing_revisions([event]) == {("evt_rev0", event.at)}


def test_existing_revisions_sees_only_stored_pairs(store):
    events = make_events(5)
    store.insert_events(events[:3])
    found = store.existing_revisions(events)
    assert found == {(e.eventId, e.decisionUpdatedAt) for e in events[:3]}


def test_stores_with_different_databases_share_one_chdb_client(store, store_settings):
    other_settings = StoreSettings(
        data_dir=store_settings.data_dir, chdb_dir=store_settings.chdb_dir, database=store_settings.database + "_b"
    )
    other = Store(other_settings).open()
    try:
        assert other.client is store.client is chdb_client(store_settings.chdb_path)
        other.insert_events(make_events(3))
        assert count_rows(other) == 3 and count_rows(store) == 0
    finally:
        other.command(f"DROP DATABASE IF EXISTS `{other.database}` SYNC")


def test_a_second_chdb_path_is_refused(store, tmp_path):
    with pytest.raises(StoreError, match="one chdb path per process"):
        chdb_client(str(tmp_path / "another"))


def test_generic_sql_and_ping(store):
    store.insert_events(make_events(4))
    assert store.ping()
    assert store.query_rows(f"SELECT count() FROM {store.events_table} WHERE agentId = {{a:String}}", {"a": "agent-1"}) == [(4,)]
    assert store.query_dicts("SELECT 1 AS one") == [{"one": 1}]
    assert store.table("alerts") == f"`{store.database}`.`alerts`"


async def test_async_twins_run_off_the_loop(store):
    events = make_events(3)
    assert await store.ainsert_events(events) == 3
    assert await store.acount_distinct_events() == 3
    latest = await store.alatest_events([events[0].eventId])
    assert latest[events[0].eventId] == events[0]
    assert await store.aping()
    rows, dicts = await asyncio.gather(
        store.aquery_rows(f"SELECT count() FROM {store.events_table}"),
        store.run(store.query_dicts, "SELECT 2 AS two"),
    )
    assert rows == [(3,)] and dicts == [{"two": 2}]


@pytest.mark.clickhouse
def test_against_a_real_server(store_database):
    import os

    if not os.environ.get("CLICKHOUSE_URL"):
        pytest.skip("CLICKHOUSE_URL is not set")
    server = Store(StoreSettings.from_env(database=store_database)).open()
    try:
        assert server.mode == "clickhouse" and server.ping()
        event = make_event("evt_server")
        server.insert_events([event])
        assert server.latest_events(["evt_server"])["evt_server"] == event
    finally:
        server.command(f"DROP DATABASE IF EXISTS `{store_database}` SYNC")
        server.close()


def test_insert_json_joins_payloads_into_one_insert(store):
    import orjson

    from anysentry.store import event_rows

    a, b, earlier = make_events(3), make_events(2), make_events(2)
    # an array of objects is how an earlier release wrote its log: still inserted, in the same statement
    payloads = [event_rows.payload(a), event_rows.payload([]), orjson.dumps(earlier), b"[]", event_rows.payload(b)]
    joined = b"".join(bytes(p) for p in event_rows.insert_buffers(payloads))
    assert event_rows.decode(b"[" + joined + b"]") == a + earlier + b
    assert event_rows.insert_buffers([b"[]", event_rows.payload([])]) == [] and event_rows.insert_buffers([]) == []
    store.insert_json(payloads)
    store.insert_json([b"[]"])  # nothing to do
    parts = store.query_rows(f"SELECT count(), uniqExact(_part) FROM {store.events_table}")[0]
    assert parts == (7, 1)  # one statement, one part
    assert store.latest_events([e.eventId for e in a + b + earlier]) == {e.eventId: e for e in a + b + earlier}


def test_rows_payloads_name_their_fields_and_join_into_one(store):
    import orjson

    from anysentry.events.model import EVENT_FIELDS
    from anysentry.store import event_rows

    a, b = make_events(2), make_events(3)
    rows = orjson.loads(event_rows.payload(a))
    assert rows[0] == list(EVENT_FIELDS) and len(rows) == 3 and rows[1][0] == a[0].eventId
    assert len(event_rows.payload(a)) < 0.8 * len(orjson.dumps(a))  # names once, not on every event
    joined = event_rows.join([event_rows.payload(a), event_rows.payload([]), event_rows.payload(b)])
    assert event_rows.decode(joined) == a + b
    # a later release's payload, with a field this one does not know and without one it does
    names = ["future", *[f for f in EVENT_FIELDS if f != "rawPreview"]]
    values = [["x", *[getattr(e, f) for f in names[1:]]] for e in b]
    later = orjson.dumps([names, *values])
    assert [e.eventId for e in event_rows.decode(later)] == [e.eventId for e in b]
    assert all(e.rawPreview == "" for e in event_rows.decode(later))
    store.insert_json([later])
    stored = store.latest_events([e.eventId for e in b])
    assert len(stored) == 3 and all(e.rawPreview == "" for e in stored.values())


class _FakeServerClient:
    """Records what a server would be sent; `refuse` makes the JSON insert fail like a server error."""

    def __init__(self, refuse: Exception | None = None):
        self.refuse = refuse
        self.commands: list[tuple[str, bytes, dict]] = []
        self.inserts: list[list] = []

    def command(self, sql, data=None, settings=None):
        if self.refuse is not None:
            raise self.refuse
        self.commands.append((sql, data, settings))

    def insert(self, table, data, **kwargs):
        self.inserts.append(data)


def _server_store(tmp_path, client) -> Store:
    server = Store(StoreSettings(url="http://127.0.0.1:9", data_dir=str(tmp_path), database="srv"))
    server._client = client  # as if connected
    return server


def test_a_server_gets_the_json_rows_as_the_request_body(tmp_path):
    from anysentry.store import event_rows

    client = _FakeServerClient()
    server = _server_store(tmp_path, client)
    events = make_events(3)
    server.insert_json([event_rows.payload(events[:1]), event_rows.payload(events[1:])])
    probe, (sql, body, settings) = client.commands
    assert probe[1] == event_rows.NAMES  # the one-time probe inserts nothing: names, no row
    assert "FROM input(" in sql and sql.endswith("FORMAT JSONCompactEachRowWithNames") and "`srv`.`events`" in sql
    assert event_rows.decode(b"[" + body + b"]") == events
    assert settings["input_format_json_read_objects_as_strings"] == 1
    server.insert_json([event_rows.payload(events)])
    assert len(client.commands) == 3 and not client.inserts  # probed once


def test_a_server_refusing_json_inserts_gets_columns(tmp_path):
    import orjson
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    down = _server_store(tmp_path, _FakeServerClient(refuse=OperationalError("connection refused")))
    with pytest.raises(OperationalError):
        down.insert_events(make_events(1))
    assert down._json_body is None  # undecided: probed again once the server answers

    client = _FakeServerClient(refuse=DatabaseError("Unknown setting input_format_json_read_objects_as_strings"))
    old = _server_store(tmp_path, client)
    events = make_events(2)
    assert old.insert_events(events) == 2
    assert old._json_body is False and len(client.inserts) == 1
    assert client.inserts[0] == event_columns([AgentEvent.from_dict(e) for e in orjson.loads(orjson.dumps(events))])


def test_row_files_of_dead_processes_are_removed_at_open(store, store_settings, tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"anysentry-rows-{int(dead.stdout)}-x.json"
    mine = tmp_path / f"anysentry-rows-{os.getpid()}-y.json"
    other = tmp_path / "unrelated.json"
    for path in (orphan, mine, other):
        path.write_text("[]")
    Store(store_settings).open()
    assert not orphan.exists() and mine.exists() and other.exists()


@pytest.mark.parametrize("in_memory", [True, False], ids=["memfd", "temp-file"])
def test_inserted_rows_leave_no_file_behind(store, tmp_path, monkeypatch, in_memory):
    """The rows file the engine reads is anonymous memory on Linux; where there is none (or it is
    refused), a named temporary file that is removed after the insert."""
    import os
    import tempfile

    import orjson

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if not in_memory:
        monkeypatch.delattr(os, "memfd_create")
    open_fds = len(os.listdir("/proc/self/fd"))
    events = make_events(4)
    store.insert_json([orjson.dumps(events)])
    assert store.latest_events([e.eventId for e in events]) == {e.eventId: e for e in events}
    assert list(tmp_path.iterdir()) == [] and len(os.listdir("/proc/self/fd")) == open_fds
