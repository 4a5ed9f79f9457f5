"""The audit log (SPEC §25): every management action, who did it, and what it touched.

Records are redacted (§5.3) before they are kept, and appended to the store's `audit` table."""

from __future__ import annotations

import hashlib
import itertools
from collections import deque

from anysentry.events.redact import bounded_details, redact_text
from anysentry.events.timefmt import display_time, now_ms

SCHEMA = "anysentry.audit.v1"
MAX_IN_MEMORY = 5000
SYSTEM_ACTOR = {"type": "system", "id": "anysentry"}


def audit_id(at: int, seq: int, actor_id: str, action: str, resource_type: str, resource_id: str) -> str:
    joined = "".join(f"{p}\0" for p in (at, seq, actor_id, action, resource_type, resource_id))
    return "aud_" + hashlib.sha1(joined.encode("utf-8")).hexdigest()[:20]


class AuditLog:
    def __init__(self, table=None):
        self.table = table
        self.records: deque[dict] = deque(maxlen=MAX_IN_MEMORY)
        self._seq = itertools.count(1)
        self.pending: list[dict] = []  # written to the store by the state flush

    def load(self, records: list[dict]) -> None:
        for record in sorted(records, key=lambda r: r.get("at", 0))[-MAX_IN_MEMORY:]:
            self.records.append(record)

    def record(self, action: str, resource_type: str, resource_id: str, summary: str, *, actor: dict | None = None,
               result: str = "success", details: dict | None = None, now: int | None = None) -> dict:
        at = now or now_ms()
        actor = actor or SYSTEM_ACTOR
        record = {
            "schemaVersion": SCHEMA,
            "auditId": audit_id(at, next(self._seq), actor.get("id", ""), action, resource_type, resource_id),
            "at": at,
            "actor": actor,
            "action": action,
            "resourceType": resource_type,
            "resourceId": resource_id,
            "summary": redact_text(summary)[:1000],
            "result": result,
            "details": bounded_details(details or {}),
        }
        self.records.append(record)
        self.pending.append(record)
        return record

    def drain(self) -> list[dict]:
        pending, self.pending = self.pending, []
        return pending

    @staticmethod
    def item(record: dict) -> dict:
        return {**record, "at": display_time(record["at"])}
