"""A Secret-sourced notification channel was stored with its webhook URL and HMAC key by an older
release; its newer versions are stored without them, but ReplacingMergeTree keeps the old version
until a merge. The migration run at start removes it (and only it), once."""

from __future__ import annotations

import json

from anysentry.ops.notification_secrets import stored_channel
from anysentry.store import schema
from anysentry.store.client import Store
from anysentry.store.state import StateTable

URL = "https://hooks.example.com/services/T000/CANARY-PATH?token=CANARY-QUERY"
KEY = "CANARY-HMAC-KEY"
REST_URL = "https://hooks.example.com/rest-inline"  # a REST channel's own URL: not a Secret's
REFS = {"webhookUrl": {"name": "pager-hook", "key": "url"}, "signingKey": {"name": "pager-hook", "key": "hmac"}}


def channel(cid: str, url: str, key: str = "", **extra) -> dict:
    return {"channelId": cid, "name": cid, "type": "webhook", "enabled": True, "webhookUrl": url, "signingKey": key,
            "description": "", "labels": {}, "createdAt": 1, "updatedAt": 1, **extra}


def all_versions(store) -> list[tuple[str, int, dict]]:
    rows = store.query_rows(f"SELECT id, version, body FROM {store.table('notification_channels')} ORDER BY id, version")
    return [(id_, version, json.loads(body)) for id_, version, body in rows]


def keep_old_versions(store) -> None:
    """No background merge collapses this test's versions (a busy server may not merge for long);
    mutations still run."""
    store.command(f"ALTER TABLE {store.table('notification_channels')} MODIFY SETTING "
                  "max_bytes_to_merge_at_max_space_in_pool = 1, max_bytes_to_merge_at_min_space_in_pool = 1")


def test_old_versions_holding_a_secret_channels_values_are_removed_once(store):
    keep_old_versions(store)
    table = StateTable(store, "notification_channels")
    secret_id, rest_id, gone_id = "chn_team-a_pager_oncall", "chn_0123456789abcdef", "chn_team-a_old_oncall"
    # as an older release wrote them: the operator's receiver channels with their values ...
    table.put(secret_id, channel(secret_id, URL, KEY))
    table.put(gone_id, channel(gone_id, URL, KEY))
    table.put(rest_id, channel(rest_id, REST_URL))
    # ... then this release: the same channels, Secret-sourced, stored without them; one deleted since
    table.put(secret_id, stored_channel(channel(secret_id, URL, KEY, source="secret", secretRef=REFS)))
    table.put(gone_id, stored_channel(channel(gone_id, URL, KEY, source="secret", secretRef=REFS)))
    table.delete(gone_id)
    table.put(rest_id, channel(rest_id, REST_URL, description="renamed"))
    assert URL in repr(all_versions(store)) and KEY in repr(all_versions(store))

    Store(store.settings).open()  # a start on that store migrates it
    rows = all_versions(store)
    assert URL not in repr(rows) and KEY not in repr(rows) and "CANARY" not in repr(rows)
    # what reads see is what it was: the newest version of every channel, untouched
    (current,) = [body for id_, body in table.items() if id_ == secret_id]
    assert current["source"] == "secret" and current["secretRef"] == REFS
    assert current["endpointPreview"] == "https://hooks.example.com/..." and current["signingKeyConfigured"] is True
    assert table.get(gone_id) is None
    assert table.get(rest_id)["webhookUrl"] == REST_URL and table.get(rest_id)["description"] == "renamed"
    assert [body["webhookUrl"] for id_, _, body in rows if id_ == rest_id] == [REST_URL, REST_URL]  # not a Secret's

    assert schema.migrate(store.command, store.query_rows, store.database, 90) == []  # done: runs once


def test_nothing_to_remove_changes_nothing(store):
    table = StateTable(store, "notification_channels")
    table.put("chn_team-a_pager_oncall", stored_channel(channel("chn_team-a_pager_oncall", URL, KEY, source="secret",
                                                                secretRef=REFS)))
    before = all_versions(store)
    assert schema.scrub_secret_channels(store.command, store.query_rows, store.database) == []
    assert all_versions(store) == before
