"""Kubernetes Events on the custom resources: breaches, suppressions, token rotations, invalid policy.

`emit(kube, obj, reason, message, type)` posts a core/v1 Event about `obj` (a resource dict with
apiVersion, kind and metadata). Posting never fails the caller (an Event is a notice, not state), and
the same (object, reason, message) within `DEDUPE_SECS` is posted once."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from anysentry.operator.status import now_utc, rfc3339

log = logging.getLogger("anysentry.operator.events")
COMPONENT = "anysentry-operator"
DEDUPE_SECS = 60.0
NORMAL, WARNING = "Normal", "Warning"

_recent: dict[tuple[str, str, str], float] = {}
_lock = threading.Lock()


def event_manifest(obj: dict, reason: str, message: str, type_: str = NORMAL) -> dict:
    meta = obj.get("metadata") or {}
    now = rfc3339(now_utc())
    involved = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""), "name": meta.get("name", ""),
                "namespace": meta.get("namespace", "")}
    if meta.get("uid"):
        involved["uid"] = meta["uid"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'anysentry')[:200]}.", "namespace": meta.get("namespace", "")},
        "involvedObject": involved,
        "reason": reason[:128],
        "message": message[:1024],
        "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def emit(kube, obj: dict, reason: str, message: str, type_: str = NORMAL) -> dict | None:
    meta = obj.get("metadata") or {}
    key = (meta.get("uid") or f"{meta.get('namespace')}/{obj.get('kind')}/{meta.get('name')}", reason, message)
    now = time.monotonic()
    with _lock:
        if now - _recent.get(key, -DEDUPE_SECS - 1) < DEDUPE_SECS:
            return None
        _recent[key] = now
        if len(_recent) > 4096:
            for old in sorted(_recent, key=_recent.get)[:1024]:
                del _recent[old]
    try:
        return kube.create(event_manifest(obj, reason, message, type_), meta.get("namespace"))
    except Exception as exc:  # an Event is a notice: never fail the reconcile over it
        log.warning("could not post event %s on %s/%s: %s", reason, obj.get("kind"), meta.get("name"), exc)
        return None


def reset() -> None:
    """Forget what was posted (tests)."""
    with _lock:
        _recent.clear()


def describe(obj: dict) -> str:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"


async def aemit(kube, obj: dict, reason: str, message: str, type_: str = NORMAL) -> dict | None:
    """`emit` from async code (`kube` is an AsyncKube or a plain Kube)."""
    import asyncio

    return await asyncio.to_thread(emit, getattr(kube, "sync", kube), obj, reason, message, type_)
