"""Time input and the three output formats of SPEC §3.4 (display, ISO-8601 ms, epoch ms)."""

from __future__ import annotations

import math
import time
from functools import lru_cache
from datetime import datetime, timezone


MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_time(value: object, default: int | None = None) -> int:
    """Epoch ms from a number (>1e10 is ms, else s), numeric string, display or ISO string.

    Anything unparseable means `default` (now when not given)."""
    fallback = now_ms() if default is None else default
    if value is None or isinstance(value, bool):
        return fallback
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            return fallback
        ms = int(value) if value > 1e10 else int(value * 1000)
        return ms if ms <= MAX_MS else fallback
    if not isinstance(value, str):
        return fallback
    text = value.strip()
    if not text:
        return fallback
    try:
        return parse_time(float(text), fallback)
    except ValueError:
        pass
    iso = text.replace(" ", "T", 1) if len(text) >= 11 and text[10] == " " else text
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        return fallback
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        ms = int(parsed.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        return fallback
    return ms if 0 <= ms <= MAX_MS else fallback


def display_time(ms: int | float | None) -> str:
    """`YYYY-MM-DD HH:MM:SS` in UTC: the format of every timestamp inside list items."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(ms: int | float | None = None) -> str:
    """Full ISO-8601 UTC with milliseconds and `Z` (envelope timestamps, healthz, generatedAt)."""
    ms = now_ms() if ms is None else ms
    return _iso_second(int(ms) // 1000) + f"{int(ms) % 1000:03d}Z"


@lru_cache(maxsize=256)
def _iso_second(seconds: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS.` of a second: every answer of that second shares it."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
