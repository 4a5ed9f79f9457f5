"""Sanitising request and record fields (SPEC §3.1: inputs are sanitised, not rejected)."""

from __future__ import annotations

from typing import Callable

import orjson

from anysentry.events.redact import redact_recurring


def text(value: object, limit: int = 256) -> str:
    """Trimmed, bounded text; None, containers and booleans become ""."""
    if value is None or isinstance(value, (dict, list, tuple, set, bool)):
        return ""
    return str(value).strip()[:limit]


def redacted_text(value: object, limit: int) -> str:
    """`text` for what alerts and incidents show: value-redacted (§5.1), booleans as true/false.
    Their texts recur with every event of an incident, so each is redacted once (`redact_recurring`)."""
    if type(value) is str:  # nearly always: checked first
        return redact_recurring(value.strip())[:limit]
    if value is None or isinstance(value, (dict, list, tuple, set)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return redact_recurring(str(value).strip())[:limit]


def clamp(value: object, low: int, high: int, default: int) -> int:
    """An integer clamped to [low, high]; anything unreadable is the default."""
    try:
        return max(low, min(high, int(float(value))))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return default


def json_object(value: object) -> dict:
    """A dict, or a JSON object in text (stored JSON columns); anything else is {}."""
    if isinstance(value, dict):
        return value
    if isinstance(value, (str, bytes)) and value:
        try:
            loaded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return {}


def text_list(value: object, limit: int = 64, item_limit: int = 256, clean: Callable[[object, int], str] = text) -> list[str]:
    """A list of distinct non-empty texts (a comma-separated string counts), at most `limit`."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        return []
    out: list[str] = []
    for item in value:
        cleaned = clean(item, item_limit)
        if cleaned and cleaned not in out:
            out.append(cleaned)
        if len(out) >= limit:
            break
    return out
