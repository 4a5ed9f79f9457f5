"""Notifications (SPEC §17): webhook channels, routes that pick them, and the delivery log.

`notify(alert, action)` is called by the alert book inside ingest and management requests: it only
matches routes and enqueues (alert snapshot, channel, route, action). Delivery runs in one worker
task per channel, started lazily on the running loop, so a slow or dead receiver delays only its own
channel and never an ingest answer; per channel, deliveries keep their order (opened → resolved).

Delivery: `POST <webhookUrl>` with `anysentry.alert.v1`; when the channel has a `signingKey`, the
header `X-AnySentry-Signature: sha256=<hex HMAC-SHA256 of the exact body>`. Transport errors and
5xx answers are retried (at most 3 attempts, capped exponential backoff, the same body each time);
a final 5xx is an `error` delivery carrying the status. Any other answer (2xx-4xx) is `ok`, as the
compatibility rule of §17 says; the HTTP status is kept on the delivery row as `httpStatus`.

`webhookUrl` and `signingKey` are write-only: no read shape includes them (`endpointPreview` only).
Channels whose URL and key come from Secrets are never stored with them, and only a process holding
the values delivers there (`ops.notification_secrets`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections import deque
from urllib.parse import urlsplit

import orjson

from anysentry.events.ids import hash_id
from anysentry.events.redact import redact_text, sanitize_attributes
from anysentry.events.timefmt import display_time, iso_time, now_ms
from anysentry.judge.decision import SEVERITIES, severity_rank
from anysentry.ops.alerts import KINDS, alert_item
from anysentry.ops.book import Book
from anysentry.ops.fields import text_list
from anysentry.ops.notification_secrets import (QUEUED, SECRET_FIELDS, ChannelBook, SecretDelivery, endpoint_preview,
                                                 from_secret)

log = logging.getLogger("anysentry.ops.notifications")

SCHEMA = "anysentry.alert.v1"
ENV_CHANNEL_ID = "env-webhook"
DISPATCHER = {"type": "system", "id": "notification-dispatcher"}
ACTIONS = ("opened", "reopened", "resolved")
MAX_DELIVERIES = 1000
MAX_QUEUED_PER_CHANNEL = 2000
SCOPE_FIELDS = ("workspacePath", "agentId", "collectorId", "sourceId", "owner", "team")
LINK_LABELS = ("taskId", "objectiveId", "issueId")


_last_order = 0


def _next_order() -> int:
    """A strictly increasing creation stamp (ns): routes created in the same millisecond keep their order."""
    global _last_order
    _last_order = max(_last_order + 1, time.time_ns())
    return _last_order


class NotificationError(ValueError):
    """A management request the notifier refuses (e.g. writing the read-only env channel)."""


def sign(key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _text(value: object, limit: int = 256) -> str:
    if value is None or isinstance(value, (dict, list, tuple)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()[:limit]


def _str_list(value: object, limit: int = 64, item_limit: int = 160) -> list[str]:
    return text_list(value, limit, item_limit, _text)


class RouteBook(Book):
    table_name = "notification_routes"
    id_field = "routeId"


class DeliveryBook(Book):
    table_name = "deliveries"
    id_field = "deliveryId"
    max_records = MAX_DELIVERIES


class Notifier(SecretDelivery):
    """Channels, routes, the delivery log and the per-channel delivery workers."""

    def __init__(self, engine, *, env_url: str | None = None):
        self.engine = engine
        self.channels = ChannelBook()
        self.routes = RouteBook()
        self.deliveries = DeliveryBook()
        self.env_url = (os.environ.get("ANYSENTRY_ALERT_WEBHOOK_URL", "") if env_url is None else env_url).strip()
        self.env_state: dict = {}
        self.timeout_secs = 10.0
        self.max_attempts = 3
        self.retry_base_secs = 0.5
        self.retry_cap_secs = 8.0
        self._queues: dict[str, deque] = {}
        self._workers: dict[str, asyncio.Task] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop workers run on
        super().__init__()

    # ---- channels ----------------------------------------------------------------------------
    def env_channel(self) -> dict | None:
        if not self.env_url:
            return None
        return {"channelId": ENV_CHANNEL_ID, "name": "ANYSENTRY_ALERT_WEBHOOK_URL", "type": "webhook", "enabled": True,
                "webhookUrl": self.env_url, "description": "Fallback webhook from the environment", "labels": {},
                "readOnly": True, **self.env_state}

    def channel(self, channel_id: str) -> dict | None:
        if channel_id == ENV_CHANNEL_ID:
            return self.env_channel()
        return self.channels.get(channel_id)

    def all_channels(self) -> list[dict]:
        env = self.env_channel()
        records = sorted(self.channels.values(), key=lambda r: (r.get("_order") or 0, r.get("createdAt") or 0, r["channelId"]))
        return ([env] if env else []) + records

    @staticmethod
    def channel_item(record: dict) -> dict:
        out = {k: v for k, v in record.items() if k not in SECRET_FIELDS and not k.startswith("_") and v is not None}
        if "webhookUrl" in record or not from_secret(record):  # else: the preview the store kept
            out["endpointPreview"] = endpoint_preview(record.get("webhookUrl", ""))
            out["signingKeyConfigured"] = bool(record.get("signingKey"))
        for key in ("createdAt", "updatedAt", "lastSentAt"):
            if out.get(key):
                out[key] = display_time(out[key])
        return out

    def _apply_channel(self, record: dict, body: dict, secret_ref: dict | None = None) -> None:
        self._mark_source(record, body, secret_ref)
        if "name" in body:
            record["name"] = _text(body["name"], 160) or record.get("name") or record["channelId"]
        if isinstance(body.get("enabled"), bool):
            record["enabled"] = body["enabled"]
        if "webhookUrl" in body:
            record["webhookUrl"] = _text(body["webhookUrl"], 2048)
        if "signingKey" in body:
            record["signingKey"] = _text(body["signingKey"], 512)
        if "description" in body:
            record["description"] = redact_text(_text(body["description"], 1000))
        if isinstance(body.get("labels"), dict):
            record["labels"] = sanitize_attributes(body["labels"], max_keys=80, max_value=500)

    def create_channel(self, body: dict, *, actor: dict | None = None, now: int | None = None,
                       audited: bool = True, secret_ref: dict | None = None) -> dict:
        """`audited=False`: a replica taking in a change already audited where it was made.
        `secret_ref`: the body's URL and key were read from these Secrets (kept in memory only)."""
        at = now or now_ms()
        channel_id = _text(body.get("channelId"), 160)
        if channel_id == ENV_CHANNEL_ID:
            raise NotificationError(f"channel {ENV_CHANNEL_ID} is read-only (set by ANYSENTRY_ALERT_WEBHOOK_URL)")
        if channel_id and channel_id in self.channels.records:
            return self.update_channel(channel_id, body, actor=actor, now=at, audited=audited,  # type: ignore[return-value]
                                       secret_ref=secret_ref)
        name = _text(body.get("name"), 160)
        url = _text(body.get("webhookUrl"), 2048)
        channel_id = channel_id or hash_id("chn", [at, name, url])
        record = {"channelId": channel_id, "name": name or channel_id, "type": "webhook", "enabled": True,
                  "webhookUrl": "", "description": "", "labels": {}, "createdAt": at, "updatedAt": at,
                  "_order": _next_order()}
        self._apply_channel(record, body, secret_ref)
        self.channels.put(record)
        if audited:
            self._audit_change("notification.channel.updated", channel_id, f"notification channel {record['name']} created",
                               actor, {"channelId": channel_id, "name": record["name"], "enabled": record["enabled"],
                                       "endpointPreview": endpoint_preview(record["webhookUrl"])})
        return record

    def update_channel(self, channel_id: str, body: dict, *, actor: dict | None = None, now: int | None = None,
                       audited: bool = True, secret_ref: dict | None = None) -> dict | None:
        if channel_id == ENV_CHANNEL_ID:
            raise NotificationError(f"channel {ENV_CHANNEL_ID} is read-only (set by ANYSENTRY_ALERT_WEBHOOK_URL)")
        record = self.channels.get(channel_id)
        if record is None:
            return None
        self._apply_channel(record, body, secret_ref)
        record["updatedAt"] = now or now_ms()
        self.channels.touch(record)
        if audited:
            self._audit_change("notification.channel.updated", channel_id, f"notification channel {record['name']} updated",
                               actor, {"channelId": channel_id, "name": record["name"], "enabled": record["enabled"],
                                       "endpointPreview": endpoint_preview(record["webhookUrl"]),
                                       "changed": sorted(k for k in body if k in record or k in SECRET_FIELDS)})
        return record

    # ---- routes ------------------------------------------------------------------------------
    def _apply_route(self, record: dict, body: dict) -> None:
        if "name" in body:
            record["name"] = _text(body["name"], 160) or record.get("name") or record["routeId"]
        if isinstance(body.get("enabled"), bool):
            record["enabled"] = body["enabled"]
        if "channelIds" in body:
            record["channelIds"] = _str_list(body["channelIds"])
        if "minSeverity" in body:
            severity = _text(body["minSeverity"], 16).lower()
            record["minSeverity"] = severity if severity in SEVERITIES else ""
        if "kinds" in body:
            record["kinds"] = [k for k in _str_list(body["kinds"], 16, 32) if k in KINDS]
        for key in SCOPE_FIELDS:
            if key in body:
                record[key] = _text(body[key], 1024 if key == "workspacePath" else 160)
        if "q" in body:
            record["q"] = _text(body["q"], 200)
        if "description" in body:
            record["description"] = redact_text(_text(body["description"], 1000))

    def create_route(self, body: dict, *, actor: dict | None = None, now: int | None = None,
                     audited: bool = True) -> dict:
        at = now or now_ms()
        route_id = _text(body.get("routeId"), 160)
        if route_id and route_id in self.routes.records:
            return self.update_route(route_id, body, actor=actor, now=at, audited=audited)  # type: ignore[return-value]
        name = _text(body.get("name"), 160)
        route_id = route_id or hash_id("rou", [at, name, _text(body.get("q"), 200)])
        record = {"routeId": route_id, "name": name or route_id, "enabled": True, "channelIds": [], "minSeverity": "",
                  "kinds": [], **{k: "" for k in SCOPE_FIELDS}, "q": "", "description": "", "createdAt": at,
                  "updatedAt": at, "_order": _next_order()}
        self._apply_route(record, body)
        self.routes.put(record)
        if audited:
            self._audit_change("notification.route.updated", route_id, f"notification route {record['name']} created",
                               actor, {"routeId": route_id, **{k: record[k] for k in ("name", "enabled", "channelIds", "minSeverity", "kinds")}})
        return record

    def update_route(self, route_id: str, body: dict, *, actor: dict | None = None, now: int | None = None,
                     audited: bool = True) -> dict | None:
        record = self.routes.get(route_id)
        if record is None:
            return None
        self._apply_route(record, body)
        record["updatedAt"] = now or now_ms()
        self.routes.touch(record)
        if audited:
            self._audit_change("notification.route.updated", route_id, f"notification route {record['name']} updated",
                               actor, {"routeId": route_id, **{k: record[k] for k in ("name", "enabled", "channelIds", "minSeverity", "kinds")}})
        return record

    def delete_route(self, route_id: str, *, actor: dict | None = None, audited: bool = True) -> dict | None:
        """Remove a route; its channels stay (other routes may use them). None when unknown."""
        record = self.routes.get(route_id)
        if record is None:
            return None
        self.routes.remove(route_id)
        if audited:
            self._audit_change("notification.route.updated", route_id, f"notification route {record['name']} deleted",
                               actor, {"routeId": route_id, "name": record["name"], "deleted": True})
        return record

    def ordered_routes(self) -> list[dict]:
        return sorted(self.routes.values(), key=lambda r: (r.get("_order") or 0, r.get("createdAt") or 0, r["routeId"]))

    @staticmethod
    def route_item(record: dict) -> dict:
        out = {k: v for k, v in record.items() if not k.startswith("_")}
        for key in ("createdAt", "updatedAt"):
            if out.get(key):
                out[key] = display_time(out[key])
        return out

    def _audit_change(self, action: str, resource_id: str, summary: str, actor: dict | None, details: dict) -> None:
        audit = getattr(self.engine, "audit", None)
        if audit is not None:
            audit.record(action, "notification", resource_id, summary, actor=actor, details=details)

    # ---- matching ----------------------------------------------------------------------------
    @staticmethod
    def alert_text(alert: dict) -> str:
        parts = [alert.get(k) for k in ("alertId", "title", "description", "sourceSummary", "workspacePath", "agentId",
                                         "collectorId", "sourceId", "nodeName", "owner", "team", "riskName",
                                         "riskCategory", "kind")]
        return " ".join(str(p) for p in parts if p).lower()

    @classmethod
    def route_matches(cls, route: dict, alert: dict) -> bool:
        if not route.get("enabled", True) or not route.get("channelIds"):
            return False
        floor = route.get("minSeverity")
        if floor and severity_rank(alert.get("severity", "info")) < severity_rank(floor):
            return False
        if route.get("kinds") and alert.get("kind") not in route["kinds"]:
            return False
        for key in SCOPE_FIELDS:
            if route.get(key) and route[key] != (alert.get(key) or ""):
                return False
        q = (route.get("q") or "").lower()
        return not q or q in cls.alert_text(alert)

    def targets(self, alert: dict) -> list[tuple[str, dict | None]]:
        """(channelId, route) pairs: channels de-duplicated, the first route to claim one wins; the
        env channel when nothing matched."""
        claimed: dict[str, dict | None] = {}
        for route in self.ordered_routes():
            if not self.route_matches(route, alert):
                continue
            for channel_id in route["channelIds"]:
                if channel_id not in claimed and self.channel(channel_id) is not None:
                    claimed[channel_id] = route
        if not claimed and self.env_url:
            claimed[ENV_CHANNEL_ID] = None
        return list(claimed.items())

    # ---- dispatch ----------------------------------------------------------------------------
    def notify(self, alert: dict, action: str) -> int:
        """Enqueue deliveries of `alert` (record or item) for `action`; returns how many. Never blocks."""
        if action not in ACTIONS:
            return 0
        snapshot = alert_item(alert)  # the state at this moment, whatever happens to the record later
        count = 0
        for channel_id, route in self.targets(alert):
            route_ref = {"routeId": route["routeId"], "routeName": route.get("name", "")} if route else None
            if self._hand_over(snapshot, channel_id, route_ref, action, now_ms()):  # a Secret this process cannot read
                count += 1
                continue
            queue = self._queues.setdefault(channel_id, deque())
            if len(queue) >= MAX_QUEUED_PER_CHANNEL:
                channel = self.channel(channel_id) or {}
                self._record(snapshot, channel_id, channel, route_ref, action, "error", now_ms(), 0,
                             "delivery queue full", None, 0)
                continue
            queue.append((snapshot, channel_id, route_ref, action))
            count += 1
            self._ensure_worker(channel_id)
        return count

    def _ensure_worker(self, channel_id: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # called off the loop (a rule evaluated in a thread): hand the start over to the loop;
            # with no loop yet, `drain()` or the next notify on a loop starts the worker
            known = self._loop
            if known is not None and known.is_running() and not known.is_closed():
                known.call_soon_threadsafe(self._ensure_worker, channel_id)
            return
        self._loop = loop
        worker = self._workers.get(channel_id)
        if worker is not None and not worker.done() and worker.get_loop() is loop:
            return
        self._workers[channel_id] = loop.create_task(self._work(channel_id), name=f"notify-{channel_id}")

    async def _work(self, channel_id: str) -> None:
        import aiohttp

        queue = self._queues.get(channel_id)
        session = None
        try:
            while queue:
                job = queue[0]
                if session is None:
                    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_secs))
                try:
                    await self._deliver(session, *job)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("delivery to channel %s failed unexpectedly", channel_id)
                if queue and queue[0] is job:
                    queue.popleft()
        finally:
            if session is not None:
                await session.close()
            if self._workers.get(channel_id) is asyncio.current_task():
                del self._workers[channel_id]

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued delivery is done (tests, shutdown)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for channel_id, queue in self._queues.items():
                if queue:
                    self._ensure_worker(channel_id)
            pending = [w for w in self._workers.values() if not w.done()]
            if not pending:
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            await asyncio.wait(pending, timeout=remaining)

    async def close(self, timeout: float = 5.0) -> None:
        """Give queued deliveries `timeout` seconds, then stop the workers."""
        await self.drain(timeout)
        workers = [w for w in self._workers.values() if not w.done()]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def attach(self, services) -> None:
        hooks = getattr(services, "shutdown_hooks", None)
        if hooks is not None and not any(getattr(h, "_anysentry_notifier", False) for h in hooks):
            async def stop(_services) -> None:
                await self.close()
            stop._anysentry_notifier = True  # type: ignore[attr-defined]
            hooks.append(stop)

    def _payload(self, snapshot: dict, channel_id: str, channel: dict, route_ref: dict | None, action: str,
                 sent_at: int) -> bytes:
        route = {"channelId": channel_id, "channelName": channel.get("name", channel_id)}
        if route_ref:
            route.update(route_ref)
        return orjson.dumps({"schemaVersion": SCHEMA, "action": action, "sentAt": iso_time(sent_at), "route": route,
                             "alert": snapshot})

    async def _deliver(self, session, snapshot: dict, channel_id: str, route_ref: dict | None, action: str,
                       delivery_id: str | None = None) -> None:
        channel = await self._secret_values(channel_id)
        if channel is None and delivery_id:  # handed over, and the channel is gone since: the row says so
            self._record(snapshot, channel_id, {}, route_ref, action, "not_sent", now_ms(), 0, "channel removed",
                         None, 0, delivery_id)
            return
        if channel is None or (from_secret(channel) and not self.holds_secrets):
            return  # the channel went away while this delivery waited, or is the operator's to deliver
        sent_at = now_ms()
        url = channel.get("webhookUrl") or ""
        if not channel.get("enabled", True) or not url:
            reason = ("channel disabled" if not channel.get("enabled", True) else "channel has no webhook URL"
                      if "webhookUrl" in channel else "webhook URL not read from its Secret yet")
            self._record(snapshot, channel_id, channel, route_ref, action, "not_sent", sent_at, 0, reason, None, 0,
                         delivery_id)
            return
        body = self._payload(snapshot, channel_id, channel, route_ref, action, sent_at)
        headers = {"Content-Type": "application/json", "User-Agent": "anysentry-notifier/1",
                   "X-AnySentry-Action": action}
        if channel.get("signingKey"):
            headers["X-AnySentry-Signature"] = sign(channel["signingKey"], body)
        started = time.perf_counter()
        error: str | None = None
        http_status: int | None = None
        attempts = 0
        for attempt in range(self.max_attempts):
            attempts += 1
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    http_status = resp.status
                    await resp.read()
                error = f"HTTP {http_status}" if http_status >= 500 else None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # transport: refused, reset, DNS, timeout, invalid URL
                http_status = None
                error = self._transport_error(exc, url)
            if error is None:
                break
            if attempt + 1 < self.max_attempts:
                await asyncio.sleep(min(self.retry_cap_secs, self.retry_base_secs * (2 ** attempt)))
        duration = round((time.perf_counter() - started) * 1000, 1)
        status = "ok" if error is None else "error"
        if error is not None:
            log.error("webhook delivery to %s (%s) failed after %d attempts: %s",
                      channel_id, endpoint_preview(url), attempts, error)
        self._record(snapshot, channel_id, channel, route_ref, action, status, sent_at, duration, error, http_status,
                     attempts, delivery_id)

    def _transport_error(self, exc: BaseException, url: str) -> str:
        if isinstance(exc, asyncio.TimeoutError):
            message = f"timeout after {self.timeout_secs:g} s"
        else:
            message = str(exc) or type(exc).__name__
        preview = endpoint_preview(url)
        for secret in sorted({url, url.split("?", 1)[0], urlsplit(url).path if "://" in url else ""}, key=len, reverse=True):
            if secret and secret not in ("/",) and len(secret) > 1:
                message = message.replace(secret, preview)
        return redact_text(f"{type(exc).__name__}: {message}")[:300]

    def _delivery_row(self, alert: dict, channel_id: str, channel: dict, route_ref: dict | None, action: str,
                      status: str, sent_at: int, duration: float, error: str | None, http_status: int | None,
                      attempts: int, delivery_id: str | None = None) -> dict:
        route_id = (route_ref or {}).get("routeId")
        labels = alert.get("labels") or {}
        entry = {
            "deliveryId": delivery_id or hash_id("ndl", [alert.get("alertId"), channel_id, route_id, action, sent_at,
                                                         status]),
            "alertId": alert.get("alertId"), "alertRuleId": alert.get("ruleId"), "alertKind": alert.get("kind"),
            "alertSeverity": alert.get("severity"), "alertTitle": alert.get("title"),
            "channelId": channel_id, "channelName": channel.get("name", channel_id),
            "routeId": route_id, "routeName": (route_ref or {}).get("routeName"),
            "action": action, "status": status, "sentAt": sent_at, "durationMs": duration, "error": error,
            "httpStatus": http_status, "attempts": attempts,
            "endpointPreview": endpoint_preview(channel.get("webhookUrl", "")) or channel.get("endpointPreview", ""),
            **{k: alert.get(k) or "" for k in ("workspacePath", "agentId", "collectorId", "sourceId", "incidentId", "eventId")},
            **{k: str(labels.get(k) or alert.get(k) or "") for k in LINK_LABELS},
            "owner": alert.get("owner") or "", "team": alert.get("team") or "",
            "updatedAt": sent_at,
        }
        return entry

    def _record(self, alert: dict, channel_id: str, channel: dict, route_ref: dict | None, action: str, status: str,
                sent_at: int, duration: float, error: str | None, http_status: int | None, attempts: int,
                delivery_id: str | None = None) -> dict:
        entry = self._delivery_row(alert, channel_id, channel, route_ref, action, status, sent_at, duration, error,
                                   http_status, attempts, delivery_id)
        self.deliveries.put(entry)
        state = {"lastSentAt": sent_at, "lastStatus": status}
        if status == "ok":
            state["lastError"] = None
        else:
            state["lastError"] = error
        if channel_id == ENV_CHANNEL_ID:
            self.env_state.update(state)
        elif channel_id in self.channels.records:
            record = self.channels.records[channel_id]
            record.update(state)
            if record.get("lastError") is None:
                record.pop("lastError", None)
            self.channels.touch(record)
        if status != "ok":
            audit = getattr(self.engine, "audit", None)
            if audit is not None:
                audit.record("notification.delivery_failed", "notification", entry["deliveryId"],
                             f"{action} notification for alert {alert.get('alertId')} to channel "
                             f"{entry['channelName']}: {status}" + (f" ({error})" if error else ""),
                             actor=DISPATCHER, result="failure",
                             details={k: entry[k] for k in ("deliveryId", "alertId", "alertRuleId", "channelId", "routeId",
                                                            "action", "status", "error", "httpStatus", "attempts",
                                                            "endpointPreview", "incidentId", "eventId", "taskId",
                                                            "objectiveId", "issueId", "workspacePath", "agentId",
                                                            "collectorId", "sourceId")})
        return entry

    # ---- reads -------------------------------------------------------------------------------
    @staticmethod
    def delivery_item(entry: dict) -> dict:
        out = {k: v for k, v in entry.items() if v is not None and k != "updatedAt" and not k.startswith("_")}
        out["sentAt"] = display_time(entry.get("sentAt"))
        return out

    def webhook_configured(self) -> bool:
        return bool(self.env_url) or any(c.get("enabled", True) and (c.get("webhookUrl") or c.get("endpointPreview"))
                                         for c in self.channels.values())

    def config(self, query: dict, limit: int = 80) -> dict:
        """`GET /notifications/config` (§17): channels, routes and deliveries narrowed by selectors."""
        q = {k: _text(v, 1024) for k, v in query.items() if _text(v, 1024)}
        channels = self.all_channels()
        if q.get("channelId"):
            channels = [c for c in channels if c["channelId"] == q["channelId"]]
        routes = self.ordered_routes()
        if q.get("routeId"):
            routes = [r for r in routes if r["routeId"] == q["routeId"]]
        if q.get("channelId"):
            routes = [r for r in routes if q["channelId"] in r.get("channelIds", [])]
        if q.get("kind"):
            routes = [r for r in routes if q["kind"] in r.get("kinds", [])]
        if q.get("minSeverity"):
            routes = [r for r in routes if r.get("minSeverity") == q["minSeverity"]]
        for key in SCOPE_FIELDS:
            if q.get(key):
                routes = [r for r in routes if r.get(key) == q[key]]
        every = [d for d in self.deliveries.values() if d.get("status") != QUEUED]
        deliveries = sorted(every, key=lambda d: (d.get("sentAt") or 0, d["deliveryId"]), reverse=True)
        exact = ("channelId", "routeId", "deliveryId", "alertId", "incidentId", "eventId", "taskId", "objectiveId",
                 "issueId") + SCOPE_FIELDS
        for key in exact:
            if q.get(key):
                deliveries = [d for d in deliveries if (d.get(key) or "") == q[key]]
        if q.get("kind"):
            deliveries = [d for d in deliveries if d.get("alertKind") == q["kind"]]
        if q.get("minSeverity") in SEVERITIES:
            floor = severity_rank(q["minSeverity"])
            deliveries = [d for d in deliveries if severity_rank(d.get("alertSeverity") or "info") >= floor]
        summary = {
            "totalChannels": len(self.all_channels()),
            "enabledChannels": sum(1 for c in self.all_channels() if c.get("enabled", True)),
            "totalRoutes": len(self.routes.records),
            "enabledRoutes": sum(1 for r in self.routes.values() if r.get("enabled", True)),
            "totalDeliveries": len(every),
            "okDeliveries": sum(1 for d in every if d.get("status") == "ok"),
            "errorDeliveries": sum(1 for d in every if d.get("status") == "error"),
            "notSentDeliveries": sum(1 for d in every if d.get("status") == "not_sent"),
            "legacyWebhookConfigured": bool(self.env_url),
        }
        return {"channels": [self.channel_item(c) for c in channels], "routes": [self.route_item(r) for r in routes],
                "deliveries": [self.delivery_item(d) for d in deliveries[:limit]], "summary": summary,
                "updateTime": display_time(now_ms())}


def setup(engine) -> Notifier:
    alerts = getattr(engine, "alerts", None)
    env_url = getattr(getattr(alerts, "settings", None), "webhook_url", None)
    notifier = Notifier(engine, env_url=env_url)
    engine.notifications = notifier
    engine.register_book(notifier.channels)
    engine.register_book(notifier.routes)
    engine.register_book(notifier.deliveries)
    return notifier
