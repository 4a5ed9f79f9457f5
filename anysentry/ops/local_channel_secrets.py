"""REST-created notification channels without a cluster: their URL and key in a local file, not the store.

A channel created or changed through `POST`/`PUT /notifications/channels` by a standalone process
(`anysentry serve`, or `anysentry api` without `ANYSENTRY_KUBE_NAMESPACE`) is Secret-sourced like a
NotificationRoute receiver (`ops.notification_secrets`): the store keeps it with
`secretRef: {"local": "<file>"}` and without its values, which go to
`<data dir>/secrets/notification-channels/<file>` (JSON `{webhookUrl, signingKey}`, mode 0600, written
to a temporary file, fsynced and renamed into place). When the books are loaded at start
(`hold_local_values`), each such channel gets its values back from that file before anything is
delivered; a channel removed from the book takes its file with it. A channel stored inline by an
older version is moved into a file at the same moment (its old row versions are the store's to scrub)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import orjson

from anysentry.ops.notification_secrets import LOCAL_REF, SECRET_FIELDS, from_secret, restore_values

log = logging.getLogger("anysentry.ops.local_channel_secrets")

FOLDER = Path("secrets") / "notification-channels"
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,119}")
ACTOR = {"type": "system", "id": "anysentry"}


def file_name(channel_id: str) -> str:
    """The file of a channel's values: its id when that is a plain file name, else a hash of it."""
    if _PLAIN.fullmatch(channel_id) and not channel_id.endswith(".tmp"):
        return channel_id
    return "chn-" + hashlib.sha256(channel_id.encode("utf-8")).hexdigest()[:32]


def local_ref(record: dict | None) -> str | None:
    """The file a channel's `secretRef` names, when its values are local."""
    if not from_secret(record):
        return None
    name = (record.get("secretRef") or {}).get(LOCAL_REF)  # type: ignore[union-attr]
    return name if isinstance(name, str) and _PLAIN.fullmatch(name) else None


class LocalChannelSecrets:
    """One file per channel under `folder` (created 0700 on first write)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def write(self, name: str, values: dict) -> None:
        """Atomically replace file `name` with `values` (temp file 0600, fsync, rename, fsync of the folder)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = orjson.dumps({k: str(values.get(k) or "") for k in SECRET_FIELDS})
        temp = self.folder / f".{name}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.folder / name)
        self._sync_folder()

    def read(self, name: str) -> dict | None:
        try:
            value = orjson.loads((self.folder / name).read_bytes())
        except (OSError, ValueError):
            return None
        return {k: str(value.get(k) or "") for k in SECRET_FIELDS} if isinstance(value, dict) else None

    def delete(self, name: str) -> None:
        try:
            (self.folder / name).unlink()
        except FileNotFoundError:
            return
        self._sync_folder()

    def _sync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def in_cluster(services) -> bool:
    return getattr(services, "mirror", None) is not None


def local_store(services) -> LocalChannelSecrets | None:
    """The notifier's local values (set up once); None in a cluster or without notifications."""
    notifier = getattr(getattr(services, "ops", None), "notifications", None)
    if notifier is None or in_cluster(services):
        return None
    if notifier.local_values is None:
        store = LocalChannelSecrets(Path(services.store_settings.data_dir) / FOLDER)
        notifier.local_values = store

        def forget(record: dict) -> None:
            name = local_ref(record)
            if name:
                store.delete(name)

        notifier.channels.removed_listeners.append(forget)
    return notifier.local_values


def keep_channel(notifier, store: LocalChannelSecrets, body: dict, channel_id: str, *, actor: dict | None,
                 audited: bool = True) -> dict:
    """Create or change channel `channel_id` from a REST body as one whose values live in `store`:
    the record holds them in memory, the file keeps them across restarts, the store never sees them."""
    name = file_name(channel_id)
    existing = notifier.channels.get(channel_id)
    held = existing is None or "webhookUrl" in existing  # a channel whose file went missing keeps what is left
    record = notifier.create_channel({**body, "channelId": channel_id}, actor=actor, secret_ref={LOCAL_REF: name},
                                    audited=audited)
    if held or any(k in body for k in SECRET_FIELDS):
        record.setdefault("webhookUrl", "")
        store.write(name, {k: record.get(k, "") for k in SECRET_FIELDS})
    return record


def hold_local_values(services) -> int:
    """At start, once the books are loaded: every channel with local values gets them back from its
    file; an inline channel an older version stored is moved into a file. Returns how many."""
    store = local_store(services)
    if store is None:
        return 0
    notifier = services.ops.notifications
    count = 0
    for record in list(notifier.channels.values()):
        name = local_ref(record)
        if name and "webhookUrl" not in record:
            values = store.read(name)
            if values is None:
                log.error("notification channel %s: its local values (%s) are missing; it is not delivered to",
                          record["channelId"], store.folder / name)
                continue
            restore_values(record, values)  # held in memory only: nothing to write back
            count += 1
        elif not from_secret(record) and not record.get("readOnly") and record.get("webhookUrl"):
            try:
                keep_channel(notifier, store, {}, record["channelId"], actor=ACTOR, audited=False)
                count += 1
            except OSError as exc:
                log.error("notification channel %s: its values could not be moved to a local file: %s",
                          record["channelId"], exc)
    return count
