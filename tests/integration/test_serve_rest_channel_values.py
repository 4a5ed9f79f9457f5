"""`anysentry serve` with a channel created through REST (URL with a token, HMAC key): the values go
to a 0600 file under the data dir, never to the store (every row of every table, every version, is
searched for the canaries) nor AnySentry's log; an alert routed to the channel reaches a real receiver
on 127.0.0.1 signed with the key, and so it does after a restart on the same data dir. A new key
through PUT replaces the file; a channel removed from the book takes its file with it."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import stat
import uuid
from pathlib import Path

import pytest

from secret_canaries import raw_rows, signed_by, webhook_receiver
from test_serve_secret_channels import raise_alert, serving


@pytest.fixture
def serve_args(chdb_path, store_database, monkeypatch):
    """`anysentry serve --data-dir DIR` (no configuration folder) on this test's database."""
    monkeypatch.setenv("CLICKHOUSE_DB", store_database)
    for name in ("CLICKHOUSE_URL", "ANYSENTRY_ADMIN_TOKEN", "ANYSENTRY_MANAGEMENT_TOKEN", "ANYSENTRY_DATA_DIR",
                 "ANYSENTRY_KUBE_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    data_dir = Path(chdb_path).parent  # serve keeps its embedded store in <data dir>/chdb: the session's one
    yield argparse.Namespace(config=None, demo=False, host="127.0.0.1", port=0, data_dir=str(data_dir))
    from anysentry.store.client import Store
    from anysentry.store.settings import StoreSettings

    store = Store(StoreSettings(data_dir=str(data_dir), chdb_dir=chdb_path, database=store_database))
    store.command(f"DROP DATABASE IF EXISTS `{store_database}` SYNC")
    shutil.rmtree(data_dir / "wal", ignore_errors=True)


async def call(session, method: str, path: str, body: dict, expect: int) -> tuple[dict, str]:
    async with session.request(method, path, json=body) as resp:
        text = await resp.text()
        assert resp.status == expect, text
    return json.loads(text)["data"], text


async def test_rest_channel_values_live_in_a_local_file_and_deliver_after_a_restart(serve_args, caplog):
    token = f"CANARY-{uuid.uuid4().hex}"
    key = f"hmac-canary-{uuid.uuid4().hex}"
    key2 = f"hmac-canary-{uuid.uuid4().hex}"
    folder = Path(serve_args.data_dir) / "secrets" / "notification-channels"
    caplog.set_level(logging.INFO)
    async with webhook_receiver() as hook:
        port, got = hook.port, hook.received
        async with serving(serve_args) as (services, session):
            store = services.store
            notifier = services.ops.notifications
            item, text = await call(session, "POST", "/security-center/notifications/channels",
                                    {"name": "Pager", "type": "webhook", "enabled": True, "signingKey": key,
                                     "webhookUrl": f"http://127.0.0.1:{port}/hooks/{token}"}, 201)
            assert token not in text and key not in text
            assert item["endpointPreview"] == f"http://127.0.0.1:{port}/..." and item["signingKeyConfigured"] is True
            assert "webhookUrl" not in item and "signingKey" not in item
            cid = item["channelId"]
            await call(session, "POST", "/security-center/notifications/routes",
                       {"name": "pager", "channelIds": [cid], "minSeverity": "high"}, 201)
            await raise_alert(session, notifier, "s1")
            (path, headers, body), = got
            assert path == f"/hooks/{token}" and signed_by(key, headers, body)
            assert json.loads(body)["action"] == "opened"
            file = folder / cid
            assert stat.S_IMODE(file.stat().st_mode) == 0o600
            assert json.loads(file.read_text()) == {"webhookUrl": f"http://127.0.0.1:{port}/hooks/{token}",
                                                    "signingKey": key}

        dump = raw_rows(store)  # stopped: everything it held is flushed
        assert cid in dump and "Pager" in dump
        assert token not in dump and key not in dump
        (stored,) = [json.loads(b) for i, b in store.query_rows(
            f"SELECT id, body FROM {store.table('notification_channels')} FINAL") if i == cid]
        assert stored["source"] == "secret" and stored["secretRef"] == {"local": cid}
        assert stored["signingKeyConfigured"] is True and "webhookUrl" not in stored

        # restarted on the same data dir: the store gives the channel back without its values, the
        # file gives them back before anything is delivered
        async with serving(serve_args) as (services, session):
            notifier = services.ops.notifications
            assert notifier.channel(cid)["webhookUrl"].endswith(token)
            await raise_alert(session, notifier, "s2")
            assert len(got) == 2
            path, headers, body = got[1]
            assert path == f"/hooks/{token}" and signed_by(key, headers, body)
            async with session.get("/security-center/notifications/config", params={"channelId": cid}) as resp:
                text = await resp.text()
            (item,) = json.loads(text)["data"]["channels"]
            assert item["endpointPreview"] == f"http://127.0.0.1:{port}/..." and item["signingKeyConfigured"]
            assert token not in text and key not in text

            # a new key through PUT: the file changes, the store still holds neither
            item, text = await call(session, "PUT", f"/security-center/notifications/channels/{cid}",
                                    {"signingKey": key2}, 200)
            assert key2 not in text and item["signingKeyConfigured"] is True
            assert json.loads((folder / cid).read_text())["signingKey"] == key2
            await raise_alert(session, notifier, "s3")
            assert len(got) >= 3 and all(path == f"/hooks/{token}" and signed_by(key2, headers, body)
                                         for path, headers, body in got[2:])
            assert {d["status"] for d in notifier.deliveries.values() if d["channelId"] == cid} == {"ok"}
            await services.flush_state()
            dump = raw_rows(services.store)
            assert token not in dump and key not in dump and key2 not in dump

            notifier.channels.remove(cid)  # a channel that goes takes its values with it
            assert not (folder / cid).exists()
            await asyncio.sleep(0)

        logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("anysentry"))
        assert token not in logged and key not in logged and key2 not in logged


async def test_an_inline_channel_an_older_version_stored_moves_to_a_local_file(serve_args):
    """A channel row holding its URL (written before this change) is moved at start: the values go to
    the file, the row is rewritten without them, and the old row is removed by the same start."""
    token = f"CANARY-{uuid.uuid4().hex}"
    folder = Path(serve_args.data_dir) / "secrets" / "notification-channels"
    async with serving(serve_args) as (services, _session):
        from anysentry.store.state import StateTable

        table = services.store.table("notification_channels")
        # no background merge may drop the old version for us (mutations still run)
        services.store.command(f"ALTER TABLE {table} MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 1, "
                               "max_bytes_to_merge_at_min_space_in_pool = 1")
        await StateTable(services.store, "notification_channels").aput_many({"chn_old": {
            "channelId": "chn_old", "name": "old", "type": "webhook", "enabled": True, "labels": {},
            "webhookUrl": f"http://127.0.0.1:9/hooks/{token}", "createdAt": 1, "updatedAt": 1}})
    async with serving(serve_args) as (services, _session):
        channel = services.ops.notifications.channel("chn_old")
        assert channel["source"] == "secret" and channel["webhookUrl"].endswith(token)
        assert json.loads((folder / "chn_old").read_text())["webhookUrl"].endswith(token)
        await services.flush_state()
        (stored,) = [json.loads(b) for i, b in services.store.query_rows(
            f"SELECT id, body FROM {services.store.table('notification_channels')} FINAL") if i == "chn_old"]
        assert stored["secretRef"] == {"local": "chn_old"} and "webhookUrl" not in stored
        # and the version that held the URL is gone from the store at this start, not the next one
        every_version = services.store.query_rows(f"SELECT body FROM {services.store.table('notification_channels')}")
        assert every_version and token not in repr(every_version)
        services.ops.notifications.channels.remove("chn_old")
    assert not (folder / "chn_old").exists()
