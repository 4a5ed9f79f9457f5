"""Sanitising request and record fields (SPEC §3.1: inputs are sanitised, not rejected)."""

from __future__ import annotations

from typing import Callable

import orjson


def text(value: object, limit: int = 256) -> str:
    """Trimmed, bounded text; None, containers and booleans become ""."""
    if value is None or isinstance(value, (dict, list, tuple, set, bool)):
        return ""
    return str(value).strip()[:limit]


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
