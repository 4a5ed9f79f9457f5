"""Collector heartbeats and health (SPEC §23): is every node's observer alive and complete?

The latest heartbeat per collector is state (written to the store when it changes); the per-window
event counts come from the heartbeats kept in memory (bounded)."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from anysentry.events.redact import redact_text, sanitize_attributes
from anysentry.events.timefmt import display_time, iso_time, now_ms

MAX_HEARTBEATS = 10_000
STATE_TEXT = {"down": "Down", "stale": "Stale", "degraded": "Degraded", "quiet": "Quiet", "healthy": "Healthy"}


@dataclass(frozen=True)
class CollectorSettings:
    stale_after_secs: int = 180
    down_after_secs: int = 600

    @classmethod
    def from_env(cls) -> "CollectorSettings":
        def num(name: str, default: int) -> int:
            try:
                return max(1, int(os.environ.get(name, default)))
            except ValueError:
                return default
        return cls(num("ANYSENTRY_COLLECTOR_STALE_AFTER_SECS", 180), num("ANYSENTRY_COLLECTOR_DOWN_AFTER_SECS", 600))


def _num(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return value if value == value else 0


def _text(value: object, limit: int = 256) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value).strip()[:limit]


def heartbeat_record(body: dict, received_at: int) -> dict:
    """A /collectors/heartbeat body (or a mapped heartbeat line) → the stored heartbeat."""
    counts = body.get("eventKindCounts")
    features = body.get("enabledFeatures")
    filter_metrics = body.get("filterMetrics")
    collector = (_text(body.get("collectorId"), 160) or _text(body.get("podName"), 160)
                 or _text(body.get("nodeName"), 160) or "unknown-collector")
    status = _text(body.get("status"), 16).lower()
    return {
        "collectorId": collector,
        "sourceId": _text(body.get("sourceId")),
        "workspacePath": _text(body.get("workspacePath"), 1024),
        "nodeName": _text(body.get("nodeName")),
        "namespace": _text(body.get("namespace")),
        "podName": _text(body.get("podName")),
        "version": _text(body.get("version"), 80),
        "mode": _text(body.get("mode"), 80),
        "status": status if status in ("ok", "degraded", "error") else "ok",
        "attachedProbes": _num(body.get("attachedProbes")),
        "enabledFeatures": [str(f)[:80] for f in features[:32]] if isinstance(features, list) else [],
        "intervalSecs": _num(body.get("intervalSecs")),
        "eventKindCounts": {str(k)[:80]: _num(v) for k, v in list(counts.items())[:64]} if isinstance(counts, dict) else {},
        "queueDepth": _num(body.get("queueDepth")),
        "droppedEvents": _num(body.get("droppedEvents")),
        "outputDropped": _num(body.get("outputDropped")),
        "errorCount": _num(body.get("errorCount")),
        "observedAgents": _num(body.get("observedAgents")),
        "filterMetrics": sanitize_attributes(filter_metrics, max_keys=64) if isinstance(filter_metrics, dict) else {},
        "message": redact_text(_text(body.get("message"), 1000))[:500],
        "receivedAt": received_at,
    }


class CollectorRegistry:
    def __init__(self, settings: CollectorSettings | None = None):
        self.settings = settings or CollectorSettings.from_env()
        self.latest: dict[str, dict] = {}
        self.first_seen: dict[str, int] = {}
        self.history: deque[dict] = deque(maxlen=MAX_HEARTBEATS)
        self._dirty: set[str] = set()
        self.listeners: list = []

    def load(self, records: list[dict]) -> None:
        for record in records:
            cid = record.get("collectorId")
            if cid:
                self.latest[cid] = record
                self.first_seen[cid] = record.get("firstSeen") or record.get("receivedAt") or now_ms()

    def record(self, body: dict, *, now: int | None = None) -> dict:
        received = now or now_ms()
        hb = heartbeat_record(body, received)
        cid = hb["collectorId"]
        self.first_seen.setdefault(cid, received)
        hb["firstSeen"] = self.first_seen[cid]
        self.latest[cid] = hb
        self.history.append(hb)
        self._dirty.add(cid)
        for listener in self.listeners:
            listener(hb)
        return hb

    def mark_dirty(self, records: list[dict]) -> None:
        """Heartbeats a failed state flush must write again."""
        self._dirty.update(r["collectorId"] for r in records)

    def dirty_records(self) -> list[dict]:
        records = [self.latest[c] for c in self._dirty if c in self.latest]
        self._dirty.clear()
        return records

    def state(self, hb: dict, now: int, events_in_window: float) -> str:
        age = (now - hb["receivedAt"]) / 1000
        if age >= self.settings.down_after_secs:
            return "down"
        if age >= self.settings.stale_after_secs:
            return "stale"
        if hb.get("status") != "ok" or hb.get("droppedEvents") or hb.get("outputDropped") or hb.get("errorCount"):
            return "degraded"
        if not events_in_window:
            return "quiet"
        return "healthy"

    def window_counts(self, start: int, end: int) -> dict[str, dict[str, float]]:
        """Sum of heartbeat eventKindCounts per collector within [start, end]."""
        out: dict[str, dict[str, float]] = {}
        for hb in self.history:
            if start <= hb["receivedAt"] <= end:
                bucket = out.setdefault(hb["collectorId"], {})
                for kind, count in hb.get("eventKindCounts", {}).items():
                    bucket[kind] = bucket.get(kind, 0) + count
        return out

    def item(self, hb: dict, now: int, counts: dict[str, float], stats: dict | None = None, window_minutes: float = 180) -> dict:
        stats = stats or {}
        event_count = sum(counts.values()) if counts else 0
        state = self.state(hb, now, event_count or stats.get("eventCount", 0))
        return {
            "collectorId": hb["collectorId"],
            "nodeName": hb.get("nodeName") or None,
            "namespace": hb.get("namespace") or None,
            "podName": hb.get("podName") or None,
            "version": hb.get("version") or None,
            "mode": hb.get("mode") or None,
            "state": state,
            "stateText": STATE_TEXT[state],
            "firstSeen": display_time(hb.get("firstSeen")),
            "lastEventAt": display_time(stats["lastEventAt"]) if stats.get("lastEventAt") else None,
            "lastHeartbeatAt": display_time(hb["receivedAt"]),
            "lastSeenAt": display_time(max(hb["receivedAt"], stats.get("lastEventAt") or 0)),
            "eventCount": event_count,
            "eventRatePerMin": round(event_count / max(1.0, window_minutes), 3),
            "riskyEventCount": stats.get("riskyEventCount", 0),
            "observedAgentCount": stats.get("agentCount", 0),
            "observedWorkspaceCount": stats.get("workspaceCount", 0),
            "attachedProbes": hb.get("attachedProbes", 0),
            "enabledFeatures": hb.get("enabledFeatures", []),
            "queueDepth": hb.get("queueDepth", 0),
            "droppedEvents": hb.get("droppedEvents", 0),
            "outputDropped": hb.get("outputDropped", 0),
            "errorCount": hb.get("errorCount", 0),
            "filterMetrics": hb.get("filterMetrics", {}),
            "message": hb.get("message") or None,
            "eventCategoryCounts": stats.get("eventCategoryCounts", {}),
        }


def heartbeat_answer(hb: dict, source_id: str | None) -> dict:
    answer = {"accepted": True, "collectorId": hb["collectorId"], "receivedAt": iso_time(hb["receivedAt"])}
    if source_id:
        answer["sourceId"] = source_id
    return answer
