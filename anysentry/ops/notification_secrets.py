"""What of a notification channel is secret, and channels whose secrets live in Secrets.

A channel's `webhookUrl` (tokens often ride in its path or query) and `signingKey` are write-only:
reads show `endpoint_preview` and whether a key is set, nothing more.

A channel whose URL and key come from Secrets (a `NotificationRoute` receiver: `secret_ref=`, or an
id `Notifier.secret_channel` names) is "Secret-sourced": stored without them (`stored_channel`:
`source: "secret"`, `secretRef`, `endpointPreview`, `signingKeyConfigured`); a refresh keeps the
values this process read (`ChannelBook.merge`). Only a process holding them delivers there
(`holds_secrets`): the operator, which reads every route's Secrets when it starts, and `anysentry
serve`, which reads them from its secrets folder or environment when it applies its configuration
folder at start. A delivery to a channel the store gave back without them waits for that, at most
`secret_wait_secs`. A cluster's api replica (`holds_secrets = False`) hands its deliveries to such
channels (a resolve it serves, ...) over as a `queued` delivery row with the alert snapshot; the
operator's cycle `take_over`s the rows it merges and writes the outcome under the same `deliveryId`.
Queued rows are not listed.

Channels created through REST are Secret-sourced too: in a cluster the api puts their values into a
Secret it creates (`secretRef` as above) and the operator's cycle reads it; without a cluster they go
to a local file (`secretRef: {"local": <file>}`, `ops.local_channel_secrets`)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from anysentry.ops.book import Book

SECRET_FIELDS = ("webhookUrl", "signingKey")
SECRET_SOURCE = "secret"  # `source` of a channel whose URL and key live in Secrets (Kubernetes, or serve's local ones)
LOCAL_REF = "local"  # secretRef {"local": <file>}: values in a local file, not a Secret
STORED_ONLY = ("endpointPreview", "signingKeyConfigured")  # what the store keeps of a Secret's values
SECRET_WAIT_SECS = 30.0
QUEUED = "queued"  # a delivery an api replica handed to the operator, not sent yet
MAX_TAKEN = 4000  # queued deliveries remembered as taken over (4 x the delivery log)


def endpoint_preview(url: str) -> str:
    """`scheme://host[:port]` plus `/...` when a path or query exists; never credentials or path."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "invalid-url"
    if not parts.scheme or not host:
        return "invalid-url"
    if ":" in host:
        host = f"[{host}]"
    preview = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    if parts.path not in ("", "/") or parts.query:
        preview += "/..."
    return preview


def from_secret(record: dict | None) -> bool:
    return bool(record) and record.get("source") == SECRET_SOURCE  # type: ignore[union-attr]


def stored_channel(record: dict) -> dict:
    """A channel as the store keeps it: a Secret-sourced one without its URL and key (their preview
    and whether a key is set stand in); any other as it is."""
    if not from_secret(record):
        return record
    out = {k: v for k, v in record.items() if k not in SECRET_FIELDS}
    if "webhookUrl" in record:
        out["endpointPreview"] = endpoint_preview(record["webhookUrl"])
        out["signingKeyConfigured"] = bool(record.get("signingKey"))
    return out


def _name(value: object) -> str:
    return "" if value is None or isinstance(value, (dict, list, tuple, bool)) else str(value).strip()[:253]


def kube_secret_refs(channel: dict) -> dict:
    """{webhookUrl|signingKey: {name, key}} of the Kubernetes Secrets a channel's `secretRef` names
    (empty when its values are in a local file or it has none)."""
    refs = channel.get("secretRef") if isinstance(channel.get("secretRef"), dict) else {}
    return {f: {"name": r["name"], "key": r.get("key") or ""} for f, r in refs.items()  # type: ignore[union-attr]
            if f in SECRET_FIELDS and isinstance(r, dict) and r.get("name")}


def _secret_ref(value: dict) -> dict:
    """{field: {name, key}} of the Secrets holding a channel's values, or {"local": file} of a REST
    channel's values kept beside a standalone store (`ops.local_channel_secrets`): names only."""
    if isinstance(value.get(LOCAL_REF), str):
        return {LOCAL_REF: _name(value[LOCAL_REF])}
    out = {}
    for field_ in SECRET_FIELDS:
        ref = value.get(field_)
        if isinstance(ref, dict) and ref.get("name"):
            out[field_] = {"name": _name(ref.get("name")), "key": _name(ref.get("key"))}
    return out


def restore_values(record: dict, values: dict) -> dict:
    """Put the held values (`values`: webhookUrl, signingKey) back into a Secret-sourced `record`: the
    stand-ins the store kept of them go, the values are set (a missing one as ""). Returns `record`."""
    for key in STORED_ONLY:
        record.pop(key, None)
    record.update({k: values.get(k) or "" for k in SECRET_FIELDS})
    return record


def hold_channel(notifier, body: dict, refs: dict, actor: dict) -> None:
    """A Secret-sourced channel (`body`: channelId, name, enabled and the values just read from the
    Secrets `refs` names) in the notifier; nothing when it holds exactly that already. A channel that
    only gets back the values the store left out is not audited again."""
    existing = notifier.channels.get(body["channelId"])
    if existing is not None and from_secret(existing) and existing.get("secretRef") == refs \
            and all(existing.get(k) == v for k, v in body.items()):
        return
    audited = existing is None or existing.get("secretRef") != refs \
        or any(existing.get(k) != body.get(k) for k in ("name", "enabled")) \
        or ("webhookUrl" in existing and any(existing.get(k, "") != body.get(k, "") for k in SECRET_FIELDS))
    notifier.create_channel(body, actor=actor, secret_ref=refs, audited=audited)


class ChannelBook(Book):
    """Notification channels; Secret-sourced ones go to the store without their values."""

    table_name = "notification_channels"
    id_field = "channelId"

    def __init__(self) -> None:
        super().__init__()
        self.removed_listeners: list[Callable[[dict], None]] = []  # e.g. forget a channel's local values

    def stored(self, store) -> None:
        """A channel an older release stored with its values is rewritten without them by the first
        flush after start, after that start's migration looked for old versions to remove: look again."""
        store.scrub_secret_channels()

    def remove(self, key: str) -> None:
        record = self.records.get(key)
        super().remove(key)
        for listener in self.removed_listeners if record is not None else ():
            listener(record)

    def drain(self) -> tuple[dict[str, dict], list[str]]:
        changed, deleted = super().drain()
        return {key: stored_channel(record) for key, record in changed.items()}, deleted

    def merge(self, rows) -> int:
        """A Secret-sourced channel from the store has no values: keep those this process read, as
        long as the record still names the same Secrets."""
        def kept(key: str, deleted: bool, body: dict) -> tuple[str, bool, dict]:
            current = self.records.get(key)
            if deleted or not from_secret(body) or not from_secret(current) or "webhookUrl" not in current \
                    or current.get("secretRef") != body.get("secretRef"):  # type: ignore[union-attr]
                return key, deleted, body
            return key, deleted, restore_values(dict(body), current)  # type: ignore[arg-type]

        return super().merge([kept(*row) for row in rows])


class SecretDelivery:
    """The `Notifier`'s part for Secret-sourced channels: marking them, waiting for their values, and
    the handoff of deliveries from a process without them to one with them. The `Notifier` gives it
    `channel()`, `_delivery_row()`, `_ensure_worker()` and the per-channel `_queues`."""

    deliveries: Book
    _queues: dict[str, deque]
    if TYPE_CHECKING:  # the Notifier's
        def channel(self, channel_id: str) -> dict | None: ...
        def _delivery_row(self, *args, **kwargs) -> dict: ...
        def _ensure_worker(self, channel_id: str) -> None: ...

    def __init__(self) -> None:
        self.holds_secrets = True  # delivers to Secret-sourced channels (operator, serve), not a cluster's api replica
        self.secret_channel: Callable[[str], bool] | None = None  # ids whose values come from Secrets, whatever the body
        self.secret_wait_secs = SECRET_WAIT_SECS
        self.local_values = None  # ops.local_channel_secrets.LocalChannelSecrets of a standalone process
        self._taken: dict[str, None] = {}  # queued deliveries this process took over (insertion-ordered, capped)

    def _mark_source(self, record: dict, body: dict, secret_ref: dict | None) -> None:
        """Before a channel change applies: a Secret-sourced one says so and names its Secrets; new
        values replace the preview the store kept of the old ones."""
        if secret_ref is not None or (self.secret_channel is not None and self.secret_channel(record["channelId"])):
            record["source"] = SECRET_SOURCE
        if secret_ref is not None:
            record["secretRef"] = _secret_ref(secret_ref)
        if from_secret(record) and "webhookUrl" in body:
            for key in STORED_ONLY:
                record.pop(key, None)

    def _hand_over(self, snapshot: dict, channel_id: str, route_ref: dict | None, action: str, at: int) -> bool:
        """A delivery to a Secret-sourced channel from a process that cannot read the Secret: a `queued`
        row for the operator, with what it needs to send it. False: this process sends it."""
        channel = self.channel(channel_id)
        if self.holds_secrets or not from_secret(channel):
            return False
        entry = self._delivery_row(snapshot, channel_id, channel or {}, route_ref, action, QUEUED, at, 0, None, None, 0)
        entry["_handoff"] = {"alert": snapshot, "route": route_ref}
        self.deliveries.put(entry)
        return True

    def take_over(self, entry: dict) -> bool:
        """Deliver a `queued` row an api replica handed over (the outcome replaces it); False when
        this process does not deliver to Secret-sourced channels or has taken it already."""
        handoff = entry.get("_handoff") or {}
        if not self.holds_secrets or entry.get("status") != QUEUED or not handoff.get("alert") \
                or entry["deliveryId"] in self._taken:
            return False
        self._taken[entry["deliveryId"]] = None
        while len(self._taken) > MAX_TAKEN:
            del self._taken[next(iter(self._taken))]
        self._queues.setdefault(entry["channelId"], deque()).append(
            (handoff["alert"], entry["channelId"], handoff.get("route"), entry.get("action"), entry["deliveryId"]))
        self._ensure_worker(entry["channelId"])
        return True

    async def _secret_values(self, channel_id: str) -> dict | None:
        """The channel once this process holds its values: one loaded from the store without them
        waits (at most `secret_wait_secs`) for its Secret to be read again (operator, serve)."""
        deadline = time.monotonic() + self.secret_wait_secs
        channel = self.channel(channel_id)
        while from_secret(channel) and "webhookUrl" not in channel \
                and time.monotonic() < deadline:  # type: ignore[operator]
            await asyncio.sleep(0.2)
            channel = self.channel(channel_id)
        return channel
