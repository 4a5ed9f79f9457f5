"""Ingestion sources and their tokens (SPEC §22): who may send, and how each source is doing.

Tokens are shown once; only their SHA-256 and a preview are kept, and presented tokens are compared
by digest in constant time. Counters change on every event, so records are kept in memory and
written to the store when dirty rather than once per event."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from typing import Callable

from anysentry.events.ids import hash_id
from anysentry.events.timefmt import display_time, now_ms
from anysentry.ops.fields import text as _clean

SOURCE_TYPES = ("observer", "forwarder", "webhook", "otel", "custom", "falco", "tetragon")
INVALID_TOKEN = "invalid source token"
ID_MISMATCH = "source id does not match token"
DISABLED = "source disabled"
TOKEN_REQUIRED = "source token required"
_PUBLIC_DROP = ("tokenHash",)


def _env_int(name: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(os.environ.get(name, default))))
    except ValueError:
        return default


@dataclass(frozen=True)
class SourceSettings:
    stale_after_secs: int = 600
    down_after_secs: int = 1800
    rotation_days: int = 90

    @classmethod
    def from_env(cls) -> "SourceSettings":
        return cls(
            _env_int("ANYSENTRY_SOURCE_STALE_AFTER_SECS", 600, 1, 10**7),
            _env_int("ANYSENTRY_SOURCE_DOWN_AFTER_SECS", 1800, 1, 10**7),
            _env_int("ANYSENTRY_SOURCE_TOKEN_ROTATION_DAYS", 90, 0, 3650),
        )


def new_token() -> str:
    return "ansrc_" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_preview(token: str) -> str:
    return f"{token[:8]}...{token[-6:]}"


@dataclass(slots=True)
class Resolution:
    source: dict | None
    rejection: str | None = None


class SourceRegistry:
    """In-memory source records with indexes for resolution, written through to a state table."""

    def __init__(self, table=None, settings: SourceSettings | None = None):
        self.table = table
        self.settings = settings or SourceSettings.from_env()
        self._by_id: dict[str, dict] = {}
        self._by_hash: dict[str, str] = {}
        self._dirty: set[str] = set()
        self.rejection_listeners: list[Callable[[dict | None, dict, str], None]] = []
        self.change_listeners: list[Callable[[dict], None]] = []

    # ---- persistence -------------------------------------------------------------------------
    def load(self, records: list[dict]) -> None:
        for record in records:
            if record.get("sourceId"):
                self._by_id[record["sourceId"]] = record
        self._reindex()

    def _reindex(self) -> None:
        self._by_hash = {r["tokenHash"]: sid for sid, r in self._by_id.items() if r.get("tokenHash")}

    def set_token(self, source_id: str, token_hash_hex: str, preview: str, issued_at: int | None) -> None:
        """A token issued elsewhere (the operator's Secret): only its hash and preview are kept."""
        record = self._by_id[source_id]
        record.update(tokenHash=token_hash_hex, tokenPreview=preview, tokenIssuedAt=issued_at)
        self._reindex()
        self._touch(record)

    def remove(self, source_id: str) -> bool:
        """Forget a source (its resource was deleted); its token stops working at once."""
        if self._by_id.pop(source_id, None) is None:
            return False
        self._reindex()
        return True

    def mark_dirty(self, records: list[dict]) -> None:
        """Records a failed state flush must write again."""
        self._dirty.update(r["sourceId"] for r in records)

    def record_check_in_error(self, record: dict, message: str) -> None:
        record["lastError"] = message
        self._touch(record)

    def dirty_records(self) -> list[dict]:
        records = [self._by_id[sid] for sid in self._dirty if sid in self._by_id]
        self._dirty.clear()
        return records

    def _touch(self, record: dict, *, changed: bool = False) -> None:
        self._dirty.add(record["sourceId"])
        if changed:
            for listener in self.change_listeners:
                listener(record)

    # ---- lookups -----------------------------------------------------------------------------
    def get(self, source_id: str) -> dict | None:
        return self._by_id.get(source_id)

    def all(self) -> list[dict]:
        return list(self._by_id.values())

    def _match(self, creds: dict) -> dict | None:
        collector = _clean(creds.get("collectorId"))
        name = _clean(creds.get("sourceName"))
        workspace = _clean(creds.get("workspacePath"), 1024)
        kind = _clean(creds.get("sourceType"))
        if collector:
            for record in self._by_id.values():
                if record.get("collectorId") == collector:
                    return record
        if name:
            for record in self._by_id.values():
                if record.get("name") == name:
                    return record
        if workspace and kind:
            for record in self._by_id.values():
                if record.get("workspacePath") == workspace and record.get("type") == kind:
                    return record
        return None

    def _token_source(self, token: str) -> dict | None:
        digest = token_hash(token)
        source_id = self._by_hash.get(digest)
        if source_id is None:
            return None
        record = self._by_id.get(source_id)
        stored = (record or {}).get("tokenHash", "")
        return record if record and hmac.compare_digest(stored, digest) else None

    def resolve(self, creds: dict, *, default_type: str = "custom", now: int | None = None) -> Resolution:
        """§22.2: token → sourceId → collector/name/(workspace, type) → auto-discovery → none."""
        token = _clean(creds.get("token"), 512)
        given_id = _clean(creds.get("sourceId"))
        if token:
            record = self._token_source(token)
            if record is None:
                return self._reject(given_id and self._by_id.get(given_id) or self._match(creds), creds, INVALID_TOKEN)
            if given_id and given_id != record["sourceId"]:
                return self._reject(record, creds, ID_MISMATCH)
        else:
            record = self._by_id.get(given_id) if given_id else None
            if record is None:
                record = self._match(creds)
            if record is None:
                record = self._discover(creds, default_type, now)
            if record is None:
                return Resolution(None)
        if not record.get("enabled", True):
            return self._reject(record, creds, DISABLED)
        if record.get("requireToken") and not token:
            return self._reject(record, creds, TOKEN_REQUIRED)
        return Resolution(record)

    def _discover(self, creds: dict, default_type: str, now: int | None) -> dict | None:
        collector = _clean(creds.get("collectorId"))
        name = _clean(creds.get("sourceName"))
        if not collector and not name:
            return None
        kind = _clean(creds.get("sourceType")) or default_type
        workspace = _clean(creds.get("workspacePath"), 1024)
        source_id = hash_id("src", ["discovered", collector]) if collector else hash_id("src", ["discovered", kind, name, workspace])
        existing = self._by_id.get(source_id)
        if existing is not None:
            return existing
        at = now or now_ms()
        record = self._new_record(source_id, {"name": name or collector, "type": kind, "collectorId": collector,
                                              "workspacePath": workspace}, at)
        record["discovered"] = True
        self._by_id[source_id] = record
        self._touch(record, changed=True)
        return record

    def _reject(self, record: dict | None, creds: dict, reason: str) -> Resolution:
        if record is not None:
            record["rejectedEvents"] = record.get("rejectedEvents", 0) + 1
            record["lastResult"] = "rejected"
            record["lastError"] = reason
            record["lastRejectedAt"] = now_ms()
            self._touch(record)
        for listener in self.rejection_listeners:
            listener(record, creds, reason)
        return Resolution(record, reason)

    def record_rejection(self, record: dict | None, creds: dict, reason: str, count: int = 1) -> None:
        """Items rejected after resolution (unparseable lines) count on their source too."""
        if record is not None:
            record["rejectedEvents"] = record.get("rejectedEvents", 0) + count - 1
        self._reject(record, creds, reason)

    def record_accepted(self, record: dict | None, *, events: int = 0, heartbeats: int = 0, at: int | None = None,
                        last_event_at: int | None = None) -> None:
        if record is None:
            return
        at = at or now_ms()
        record["lastSeenAt"] = at
        if events:
            record["acceptedEvents"] = record.get("acceptedEvents", 0) + events
            record["lastEventAt"] = max(record.get("lastEventAt") or 0, last_event_at or at)
        if heartbeats:
            record["acceptedHeartbeats"] = record.get("acceptedHeartbeats", 0) + heartbeats
            record["lastHeartbeatAt"] = at
        record["lastResult"] = "accepted"
        self._touch(record)

    # ---- management --------------------------------------------------------------------------
    def _new_record(self, source_id: str, body: dict, at: int) -> dict:
        kind = _clean(body.get("type")) or "custom"
        record = {
            "sourceId": source_id,
            "name": _clean(body.get("name"), 160) or source_id,
            "type": kind if kind in SOURCE_TYPES else "custom",
            "enabled": body.get("enabled") is not False,
            "requireToken": body.get("requireToken") is True,
            "tokenRotationDays": None,
            "collectorId": _clean(body.get("collectorId")),
            "workspacePath": _clean(body.get("workspacePath"), 1024),
            "owner": _clean(body.get("owner"), 120),
            "team": _clean(body.get("team"), 120),
            "environment": _clean(body.get("environment"), 80),
            "tags": [str(t)[:80] for t in body.get("tags", [])[:32]] if isinstance(body.get("tags"), list) else [],
            "note": _clean(body.get("note"), 2000),
            "discovered": False,
            "createdAt": at,
            "updatedAt": at,
            "acceptedEvents": 0,
            "acceptedHeartbeats": 0,
            "rejectedEvents": 0,
        }
        self._apply_rotation_days(record, body)
        return record

    @staticmethod
    def _apply_rotation_days(record: dict, body: dict) -> None:
        if "tokenRotationDays" in body:
            try:
                days = int(body["tokenRotationDays"])
                record["tokenRotationDays"] = max(0, min(3650, days))
            except (TypeError, ValueError):
                pass

    def _issue_token(self, record: dict, at: int) -> str:
        token = new_token()
        record["tokenHash"] = token_hash(token)
        record["tokenPreview"] = token_preview(token)
        record["tokenIssuedAt"] = at
        self._reindex()
        return token

    def create(self, body: dict, *, now: int | None = None) -> tuple[dict, str]:
        at = now or now_ms()
        name = _clean(body.get("name"), 160)
        source_id = _clean(body.get("sourceId"), 160) or hash_id(
            "src", [at, name, _clean(body.get("collectorId")), _clean(body.get("workspacePath"), 1024)])
        record = self._new_record(source_id, body, at)
        self._by_id[source_id] = record
        token = self._issue_token(record, at)
        self._touch(record, changed=True)
        return record, token

    def upsert(self, source_id: str, body: dict, *, now: int | None = None) -> dict:
        """PUT semantics: update the given fields; an unknown id is created with no token."""
        at = now or now_ms()
        record = self._by_id.get(source_id)
        if record is None:
            record = self._new_record(source_id, body, at)
            self._by_id[source_id] = record
        else:
            for key, limit in (("name", 160), ("collectorId", 256), ("workspacePath", 1024), ("owner", 120),
                               ("team", 120), ("environment", 80), ("note", 2000)):
                if key in body:
                    record[key] = _clean(body[key], limit)
            if "type" in body and _clean(body["type"]) in SOURCE_TYPES:
                record["type"] = _clean(body["type"])
            for flag in ("enabled", "requireToken"):
                if isinstance(body.get(flag), bool):
                    record[flag] = body[flag]
            if isinstance(body.get("tags"), list):
                record["tags"] = [str(t)[:80] for t in body["tags"][:32]]
            self._apply_rotation_days(record, body)
            record["updatedAt"] = at
        self._touch(record, changed=True)
        return record

    def rotate(self, source_id: str, *, now: int | None = None) -> tuple[dict, str] | None:
        record = self._by_id.get(source_id)
        if record is None:
            return None
        at = now or now_ms()
        token = self._issue_token(record, at)
        record["updatedAt"] = at
        self._touch(record, changed=True)
        return record, token

    # ---- presentation ------------------------------------------------------------------------
    def rotation_days(self, record: dict) -> int:
        days = record.get("tokenRotationDays")
        return self.settings.rotation_days if days is None else int(days)

    def status(self, record: dict, now: int) -> str:
        if not record.get("enabled", True):
            return "disabled"
        last = max(record.get("lastEventAt") or 0, record.get("lastHeartbeatAt") or 0)
        if not last:
            return "unused"
        if now - last > self.settings.stale_after_secs * 1000:
            return "stale"
        return "active"

    def rotation_status(self, record: dict, now: int) -> tuple[str, int | None]:
        issued = record.get("tokenIssuedAt")
        if not record.get("requireToken") or not issued:
            return "untracked", None
        due = issued + self.rotation_days(record) * 86_400_000
        return ("overdue" if now >= due else "fresh"), due

    def item(self, record: dict, now: int | None = None) -> dict:
        """A list item (§22.1): display times, derived status, never the token hash."""
        now = now or now_ms()
        out = {k: v for k, v in record.items() if k not in _PUBLIC_DROP}
        status = self.status(record, now)
        rotation, due = self.rotation_status(record, now)
        last_signal = max(record.get("lastEventAt") or 0, record.get("lastHeartbeatAt") or 0) or None
        out.update({
            "status": status,
            "statusText": {"disabled": "Disabled", "unused": "No signal yet", "stale": "Stale", "active": "Active"}[status],
            "tokenRotationStatus": rotation,
            "tokenRotationDays": self.rotation_days(record),
        })
        if due is not None:
            out["tokenRotationDueAt"] = display_time(due)
        if record.get("tokenIssuedAt"):
            out["tokenAgeSecs"] = max(0, (now - record["tokenIssuedAt"]) // 1000)
        if last_signal:
            out["lastSignalAt"] = display_time(last_signal)
            out["ageSecs"] = max(0, (now - last_signal) // 1000)
        for key in ("createdAt", "updatedAt", "lastSeenAt", "lastEventAt", "lastHeartbeatAt", "tokenIssuedAt", "lastRejectedAt"):
            if out.get(key):
                out[key] = display_time(out[key])
        return out
