"""Status write-back: through the status subresource, as a JSON merge patch, only when it changed.

Writers build the whole status they want (a `*Status` model or its `to_k8s()` dict); `write_status`
reads the object's current status, computes `merge_patch(current, wanted)` (resources.models) and
sends nothing when that is empty, so a reconcile that finds nothing new costs one GET and no write,
and `resourceVersion` does not move (no watch event, no reconcile loop)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from anysentry.resources.models import Condition, merge_patch, set_condition

log = logging.getLogger("anysentry.operator.status")


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def from_ms(value: Any) -> datetime | None:
    """Epoch milliseconds (the ops books' time unit) → an aware datetime, seconds precision."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return datetime.fromtimestamp(int(value) // 1000, tz=timezone.utc)


def rfc3339(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def conditions_of(current: dict | None) -> list[Condition]:
    """The current conditions of an object's status as models (unparseable entries dropped)."""
    out = []
    for raw in ((current or {}).get("status") or {}).get("conditions") or []:
        try:
            out.append(Condition.model_validate(raw))
        except Exception:
            continue
    return out


def with_conditions(current: dict | None, updates: list[tuple[str, str, str, str]], generation: int,
                    now: datetime | None = None) -> list[Condition]:
    """`updates` = [(type, status, reason, message)] applied with set_condition: lastTransitionTime
    moves only on a status change."""
    conditions = conditions_of(current)
    for type_, status, reason, message in updates:
        conditions = set_condition(conditions, type_, status, reason, message, generation=generation, now=now)
    return conditions


def status_patch(current: dict | None, wanted: Any) -> dict:
    """The merge patch from the object's status to `wanted` ({} when equal)."""
    wanted = wanted.to_k8s() if hasattr(wanted, "to_k8s") else dict(wanted or {})
    return merge_patch(((current or {}).get("status") or {}), wanted)


def write_status(kube, kind: str, namespace: str, name: str, wanted: Any, *, current: dict | None = None) -> bool:
    """Patch `status` of kind/namespace/name to `wanted` when it differs; True when written.

    `current` is read when not given (the freshest status, not the one of the event that woke us)."""
    if current is None:
        current = kube.get(kind, namespace, name)
        if current is None:
            return False
    patch = status_patch(current, wanted)
    if not patch:
        return False
    try:
        kube.merge_patch(kind, namespace, name, {"status": patch}, subresource="status")
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            return False
        raise
    log.debug("status of %s %s/%s: %s", kind, namespace, name, sorted(patch))
    return True


async def awrite_status(kube, kind: str, namespace: str, name: str, wanted: Any, *, current: dict | None = None) -> bool:
    """`write_status` from async code: the API calls run in a worker thread (`kube` is an AsyncKube)."""
    import asyncio

    return await asyncio.to_thread(write_status, getattr(kube, "sync", kube), kind, namespace, name, wanted, current=current)
