"""What the collector counts and how it is doing: the numbers heartbeats report, the state the
health endpoint answers with. Interval counters (what happened since the last accepted heartbeat)
are what SPEC §23.2 sums over a window; the totals go in `filterMetrics`."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

TOTALS = ("observed", "forwarded", "rejected", "dropped", "errors")


@dataclass
class CollectorStats:
    degraded_after: float = 120.0
    started: float = field(default_factory=time.monotonic)
    kinds: Counter = field(default_factory=Counter)  # since the last accepted heartbeat
    dropped: int = 0
    errors: int = 0
    totals: Counter = field(default_factory=Counter)  # by the names in TOTALS, since the start
    api_failing_since: float | None = None
    last_api_error: str = ""
    token_rejected: str = ""  # the api's reason while it refuses our credentials
    beats: dict[str, float] = field(default_factory=dict)  # loop → last monotonic tick
    stall_after: dict[str, float] = field(default_factory=dict)

    # -- counting -------------------------------------------------------------------------------

    def observed(self, kind: str | None, count: int = 1) -> None:
        """`kind` None: a line whose kind is unknown until the api parses it (counted, no kind)."""
        if kind:
            self.kinds[kind] += count
        self.totals["observed"] += count

    def count(self, name: str, count: int = 1) -> None:
        if count:
            self.totals[name] += count
            if name == "dropped":
                self.dropped += count
            elif name == "errors":
                self.errors += count

    def counts(self) -> dict[str, int]:
        """The totals since the collector started, every one named (heartbeats and /healthz)."""
        return {name: self.totals[name] for name in TOTALS}

    def heartbeat_sent(self, kinds: Counter, dropped: int, errors: int) -> None:
        """Take what a heartbeat carried off the interval counters (more may have come meanwhile)."""
        self.kinds.subtract(kinds)
        self.kinds = +self.kinds
        self.dropped -= dropped
        self.errors -= errors

    # -- the api --------------------------------------------------------------------------------

    def api_ok(self) -> None:
        self.api_failing_since = None
        self.last_api_error = ""

    def api_failed(self, error: str) -> None:
        if self.api_failing_since is None:
            self.api_failing_since = time.monotonic()
        self.last_api_error = error[:300]

    def credentials_refused(self, reason: str) -> None:
        """The api refuses our ingest token (`reason` one of its credential reasons)."""
        self.token_rejected = reason
        self.api_failed(reason)

    def api_unreachable_for(self) -> float:
        return 0.0 if self.api_failing_since is None else time.monotonic() - self.api_failing_since

    # -- liveness -------------------------------------------------------------------------------

    def beat(self, loop: str, stall_after: float) -> None:
        self.beats[loop] = time.monotonic()
        self.stall_after[loop] = stall_after

    def stalled(self) -> list[str]:
        now = time.monotonic()
        return sorted(loop for loop, at in self.beats.items() if now - at > self.stall_after[loop])

    def status(self) -> tuple[str, str]:
        """("ok" | "degraded", why) — degraded while the api has been unreachable or refusing our
        token for longer than `degraded_after`, or when events had to be dropped."""
        reasons = []
        if self.api_unreachable_for() > self.degraded_after:
            what = f"refusing our credentials ({self.token_rejected})" if self.token_rejected else "unreachable"
            reasons.append(f"api {what} for {int(self.api_unreachable_for())} s: {self.last_api_error}".rstrip(": "))
        if self.dropped:
            reasons.append(f"{self.dropped} events dropped from the full disk buffer since the last heartbeat")
        return ("degraded" if reasons else "ok"), "; ".join(reasons)
