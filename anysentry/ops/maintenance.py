"""Maintenance windows (SPEC §19): planned quiet periods in which matching alerts are not raised.

A window targets everything, a workspace, an agent, a collector (id or node) or a source. While it is
active, alerts whose context it matches are suppressed (the alerts book asks `suppressing_window`
before raising) and active ones are resolved with the exact note `suppressed by maintenance window`;
coverage issues it matches are marked and leave scores and remediation. Events are still judged and
incidents still update. When the window ends, alerts come back on their next signal.

A `MaintenanceWindow` resource is the record `resource_record_id("mw", …)` (objectives.py); the
labels of a REST window travel in its resource's `anysentry.io/labels` annotation (free-form values
that Kubernetes labels could not hold)."""

from __future__ import annotations

import json
import logging

from anysentry.events.ids import hash_id
from anysentry.events.redact import redact_text
from anysentry.events.timefmt import display_time, now_ms, parse_time
from anysentry.ops.book import Book
from anysentry.store.window import TimeWindow
from anysentry.ops.fields import clamp as _clamp, text as clean

log = logging.getLogger("anysentry.ops.maintenance")

SUPPRESSED_NOTE = "suppressed by maintenance window"
TARGET_TYPES = ("all", "workspace", "agent", "collector", "source")
STATUSES = ("active", "scheduled", "expired", "disabled")
STATUS_TEXT = {"active": "Active", "scheduled": "Scheduled", "expired": "Expired", "disabled": "Disabled"}
ACTIVE_ALERT_STATUSES = ("open", "acknowledged", "silenced")
DEFAULT_SPAN_MS = 3_600_000
MIN_SPAN_MS = 60_000
MAX_SUPPRESSED_KEYS = 500
LABELS_ANNOTATION = "anysentry.io/labels"
_HIDDEN = ("suppressedKeys",)


def flag(value: object, default: bool) -> bool:
    """A boolean input; strings like "false"/"off"/"0" count, anything else keeps the default."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
    return default


def clean_labels(value: object) -> dict | list:
    if isinstance(value, dict):
        return {str(k)[:80]: clean(v, 256) for k, v in list(value.items())[:32]}
    if isinstance(value, list):
        return [clean(v, 120) for v in value[:32] if clean(v, 120)]
    return {}


def resource_labels(meta: dict) -> dict | list:
    """A window resource's labels: the REST labels the api kept in its annotation, else the
    resource's own labels (without the api's managed-by mark)."""
    kept = (meta.get("annotations") or {}).get(LABELS_ANNOTATION)
    if kept:
        try:
            return clean_labels(json.loads(kept))
        except ValueError:
            pass
    from anysentry.ops.objectives import API_MANAGER, MANAGED_BY  # objectives imports this module

    return {k: v for k, v in (meta.get("labels") or {}).items() if (k, v) != (MANAGED_BY, API_MANAGER)}


def agent_target_matches(target_id: str, workspace: str, agent: str) -> bool:
    """An agent target is a bare agentId or `"<workspacePath>:<agentId>"` (split at the last `:`)."""
    if not target_id or not agent:
        return False
    if target_id == agent:
        return True
    ws, sep, name = target_id.rpartition(":")
    return bool(sep) and name == agent and ws == workspace


def target_matches(target_type: str, target_id: str, context: dict) -> bool:
    """The §19 / §18 target rules against an alert, issue or task context."""
    if target_type in ("all", "global"):
        return True
    if not target_id:
        return False
    ctx = context or {}
    if target_type == "workspace":
        return ctx.get("workspacePath") == target_id
    if target_type == "agent":
        return agent_target_matches(target_id, ctx.get("workspacePath") or "", ctx.get("agentId") or "")
    if target_type == "collector":
        return ctx.get("collectorId") == target_id or (bool(ctx.get("nodeName")) and ctx.get("nodeName") == target_id)
    if target_type == "source":
        return ctx.get("sourceId") == target_id or ctx.get("ingestionSourceId") == target_id
    return False


def _suppression_key(context: dict, kind: str) -> str:
    for key in ("dedupeKey", "alertId"):
        if context.get(key):
            return str(context[key])
    parts = sorted((k, str(v)) for k, v in context.items() if isinstance(v, (str, int)) and v != "")
    return f"{kind}|" + "|".join(f"{k}={v}" for k, v in parts)


class MaintenanceBook(Book):
    table_name = "maintenance_windows"
    id_field = "windowId"
    max_records = 2000

    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    # ---- status and matching -----------------------------------------------------------------
    @staticmethod
    def status(window: dict, now: int) -> str:
        if not window.get("enabled", True):
            return "disabled"
        if window["startAt"] > now:
            return "scheduled"
        if window["endAt"] < now:
            return "expired"
        return "active"

    @staticmethod
    def matches(window: dict, context: dict) -> bool:
        return target_matches(window.get("targetType", "all"), window.get("targetId", ""), context)

    def active(self, now: int | None = None) -> list[dict]:
        now = now or now_ms()
        return [w for w in self.records.values() if self.status(w, now) == "active"]

    def window_for(self, context: dict, now: int | None = None) -> dict | None:
        """The most recently updated active window matching the context (no bookkeeping)."""
        now = now or now_ms()
        best = None
        for window in self.active(now):
            if self.matches(window, context) and (best is None or window.get("updatedAt", 0) > best.get("updatedAt", 0)):
                best = window
        return best

    def suppressing_window(self, context: dict, kind: str = "", now: int | None = None) -> dict | None:
        """The window that suppresses an alert with this context and kind (§19), counted on it."""
        window = self.window_for(context or {}, now)
        if window is not None:
            self.note_suppressed(window, _suppression_key(context or {}, kind))
        return window

    def active_for_workspace(self, workspace: str, now: int | None = None) -> dict | None:
        """The window that puts a whole workspace under maintenance (`all` or that workspace)."""
        now = now or now_ms()
        best = None
        for window in self.active(now):
            if window.get("targetType") == "all" or (window.get("targetType") == "workspace" and window.get("targetId") == workspace):
                if best is None or window.get("updatedAt", 0) > best.get("updatedAt", 0):
                    best = window
        return best

    def note_suppressed(self, window: dict, key: str) -> None:
        keys = window.setdefault("suppressedKeys", [])
        if key and key not in keys:
            keys.append(key)
            del keys[:-MAX_SUPPRESSED_KEYS]
            window["suppressedAlertCount"] = window.get("suppressedAlertCount", 0) + 1
            self.touch(window)

    # ---- effects -----------------------------------------------------------------------------
    def apply(self, window: dict, now: int | None = None) -> int:
        """Resolve the active alerts an active window matches; returns how many it resolved."""
        now = now or now_ms()
        alerts = getattr(self.engine, "alerts", None)
        if alerts is None or self.status(window, now) != "active":
            return 0
        hits: list[str] = []

        def predicate(alert: dict) -> bool:
            if alert.get("status") not in ACTIVE_ALERT_STATUSES or not self.matches(window, alert):
                return False
            hits.append(alert.get("dedupeKey") or alert.get("alertId") or "")
            return True

        try:
            alerts.resolve_where(predicate, SUPPRESSED_NOTE, now=now)
        except Exception:
            log.exception("maintenance window %s could not resolve alerts", window.get("windowId"))
            return 0
        for key in hits:
            self.note_suppressed(window, key)
        return len(hits)

    async def evaluate(self, now: int | None = None) -> None:
        """Timer `maintenance.status`: a window that has become active (or stays active) resolves the
        alerts it matches; one that ended or was disabled simply stops suppressing."""
        now = now or now_ms()
        for window in list(self.records.values()):
            if self.status(window, now) == "active":
                self.apply(window, now)

    # ---- management --------------------------------------------------------------------------
    def _apply_body(self, window: dict, body: dict, now: int, creating: bool) -> None:
        if creating or "title" in body:
            window["title"] = redact_text(clean(body.get("title"), 200))
        if creating or "targetType" in body:
            kind = clean(body.get("targetType")).lower()
            window["targetType"] = kind if kind in TARGET_TYPES else "all"
        if creating or "targetId" in body:
            window["targetId"] = clean(body.get("targetId"), 1024)
        if window["targetType"] == "all":
            window["targetId"] = ""
        for key, limit in (("reason", 2000), ("owner", 120), ("note", 2000)):
            if creating or key in body:
                window[key] = redact_text(clean(body.get(key), limit))
        if creating or "enabled" in body:
            window["enabled"] = flag(body.get("enabled"), True if creating else window.get("enabled", True))
        if creating or "labels" in body:
            window["labels"] = clean_labels(body.get("labels"))
        if creating:
            start = parse_time(body.get("startAt"), now) if body.get("startAt") not in (None, "") else now
            end = parse_time(body.get("endAt"), start + DEFAULT_SPAN_MS) if body.get("endAt") not in (None, "") else start + DEFAULT_SPAN_MS
        else:
            start = parse_time(body.get("startAt"), now) if "startAt" in body and body.get("startAt") not in (None, "") else window["startAt"]
            if "endAt" in body:
                end = parse_time(body.get("endAt"), start + DEFAULT_SPAN_MS) if body.get("endAt") not in (None, "") else start + DEFAULT_SPAN_MS
            else:
                end = window["endAt"]
        window["startAt"] = start
        window["endAt"] = max(end, start + MIN_SPAN_MS)
        if not window["title"]:
            target = window["targetId"] or "all targets"
            window["title"] = f"Maintenance · {target}"

    def create(self, body: dict, *, now: int | None = None) -> dict:
        at = now or now_ms()
        given = clean(body.get("windowId"), 160)
        if given and given in self.records:
            return self.update(given, body, now=at)  # an explicit id names one window: create is idempotent
        window: dict = {"windowId": given or "", "createdAt": at, "updatedAt": at, "suppressedAlertCount": 0}
        self._apply_body(window, body, at, creating=True)
        if not given:
            window["windowId"] = hash_id("mw", [at, window["targetType"], window["targetId"], window["title"]])
        self.put(window)
        self.apply(window, at)
        return window

    def update(self, window_id: str, body: dict, *, now: int | None = None) -> dict | None:
        window = self.records.get(window_id)
        if window is None:
            return None
        at = now or now_ms()
        self._apply_body(window, body, at, creating=False)
        window["updatedAt"] = max(at, window.get("updatedAt", 0) + 1)
        self.put(window)
        self.apply(window, at)
        return window

    def apply_resource(self, resource) -> dict:
        """A `MaintenanceWindow` custom resource (configuration folder / cluster) as a window record."""
        manifest = resource.to_k8s()
        meta, spec = manifest.get("metadata", {}), manifest.get("spec", {})
        target = spec.get("target") or {}
        body = {"title": spec.get("title") or meta.get("name", ""), "targetType": target.get("type", "all"),
                "targetId": target.get("id", ""), "startAt": spec.get("startAt"), "endAt": spec.get("endAt"),
                "reason": spec.get("reason", ""), "owner": spec.get("owner", ""), "note": spec.get("note", ""),
                "enabled": spec.get("enabled", True), "labels": resource_labels(meta)}
        from anysentry.ops.objectives import resource_record_id  # objectives imports this module

        window_id = resource_record_id("mw", meta)
        existing = self.records.get(window_id)
        if existing is not None:
            probe = dict(existing)
            self._apply_body(probe, body, now_ms(), creating=False)
            if probe == existing:
                return existing  # unchanged manifest: keep updatedAt (it ranks overlapping windows)
            return self.update(window_id, body)  # type: ignore[return-value]
        return self.create({**body, "windowId": window_id})

    # ---- presentation ------------------------------------------------------------------------
    def item(self, window: dict, now: int | None = None) -> dict:
        now = now or now_ms()
        out = {k: v for k, v in window.items() if k not in _HIDDEN}
        status = self.status(window, now)
        out["status"] = status
        out["statusText"] = STATUS_TEXT[status]
        out["suppressedAlertCount"] = window.get("suppressedAlertCount", 0)
        for key in ("startAt", "endAt", "createdAt", "updatedAt"):
            if out.get(key):
                out[key] = display_time(out[key])
        return out

    def list(self, body: dict, *, now: int | None = None) -> dict:
        """`POST /maintenance/list` (§19) with pinning (§3.6)."""
        now = now or now_ms()
        window = TimeWindow.from_body(body, default="last_7d", now=now)
        pin = clean(body.get("windowId"), 160)
        status = clean(body.get("status")).lower()
        status = status if status in STATUSES else "all"
        target_type = clean(body.get("targetType")).lower()
        target_id = clean(body.get("targetId"), 1024)
        q = clean(body.get("q"), 200).lower()
        limit = _clamp(body.get("limit"), 1, 500, 100)
        scoped = bool(target_type or target_id)
        selectors_only = bool(pin or scoped) and status == "all" and not q
        pinned, items = [], []
        for record in self.records.values():
            state = self.status(record, now)
            if pin and record["windowId"] == pin:
                pinned.append((record, state))
                continue
            if selectors_only and not scoped:
                continue  # only the pin was asked for
            if target_type and record.get("targetType") != target_type:
                continue
            if target_id and record.get("targetId") != target_id:
                continue
            if not selectors_only:
                in_time = record["endAt"] >= window.start and (window.time_type != "custom" or record["startAt"] <= window.end)
                if not in_time and state not in ("active", "scheduled"):
                    continue
                if status != "all" and state != status:
                    continue
                if q and q not in " ".join(str(record.get(k, "")) for k in (
                        "windowId", "title", "targetType", "targetId", "reason", "owner", "note")).lower():
                    continue
            items.append((record, state))
        order = {"active": 0, "scheduled": 1, "expired": 2, "disabled": 3}
        items.sort(key=lambda rs: (order[rs[1]], -(rs[0].get("updatedAt") or 0)))
        rows = [self.item(r, now) for r, _ in pinned + items]
        states = [self.status(r, now) for r in self.records.values()]
        summary = {
            "totalWindows": len(states),
            "activeWindows": states.count("active"),
            "scheduledWindows": states.count("scheduled"),
            "expiredWindows": states.count("expired"),
            "disabledWindows": states.count("disabled"),
        }
        return {"items": rows[:limit], "total": len(rows), "summary": summary, "updateTime": display_time(now)}


def setup(engine) -> None:
    book = MaintenanceBook(engine)
    engine.register_book(book)
    engine.maintenance = book
    engine.register_timer("maintenance.status", 30, book.evaluate)
