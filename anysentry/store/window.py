"""The time filter of SPEC §3.5 (`timeType`, `startTime`, `endTime`) as a concrete [start, end] window."""

from __future__ import annotations

from dataclasses import dataclass

from anysentry.events.timefmt import now_ms, parse_time

SPANS_MS = {
    "last_30m": 30 * 60_000,
    "last_1h": 3_600_000,
    "last_2h": 2 * 3_600_000,
    "last_3h": 3 * 3_600_000,
    "last_1d": 86_400_000,
    "last_7d": 7 * 86_400_000,
    "last_30d": 30 * 86_400_000,
}


@dataclass(frozen=True, slots=True)
class TimeWindow:
    start: int
    end: int
    time_type: str

    @property
    def span(self) -> int:
        return max(1, self.end - self.start)

    def previous(self) -> "TimeWindow":
        """The equal-length window just before this one (for change rates)."""
        return TimeWindow(self.start - self.span, self.start, self.time_type)

    @classmethod
    def from_body(cls, body: dict, default: str = "last_3h", now: int | None = None) -> "TimeWindow":
        now = now if now is not None else now_ms()
        time_type = body.get("timeType") if isinstance(body, dict) else None
        time_type = time_type if time_type in SPANS_MS or time_type == "custom" else default
        if time_type == "custom":
            start = parse_time(body.get("startTime"), now - SPANS_MS["last_3h"])
            end = min(parse_time(body.get("endTime"), now), now)
            if start > end:
                start, end = end, start
            return cls(start, end, time_type)
        return cls(now - SPANS_MS[time_type], now, time_type)
