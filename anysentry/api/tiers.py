"""Deeper tiers in the ingest path (SPEC §9.6): L1 escalations go on to L2 (model) and L3
(investigator) in the background, so ingest latency never includes a model call.

How one eligible event flows (L1 `escalate`, profile `full`, maxTier ≥ L2, `nextTierEligible`):

1. `prepare()` — called by the pipeline right after L1, before the write — marks the L1 row
   `decisionStatus: pending` with ` [awaiting L2]` and reserves a place in the bounded queue.
   When the queue is full the event is resolved at once by the fail mode (counted `overflow`).
2. The pipeline writes the batch durably and answers the producer (pending rows included).
3. `dispatch()` starts the background judgment of the pending rows and returns the FINAL events
   only: the ops engine (incidents, alerts) never sees a pending row.
4. The judgment runs under a semaphore; its result is a NEW revision of the same event (same
   eventId, later `decisionUpdatedAt`, tier `Llm`/`Agent`, `decisionStatus: succeeded`) written
   through `writer.submit`, then handed to the ops listeners. An L2 escalation with L3 configured
   first writes an interim pending revision (` [awaiting L3]`, stop reason `l2_escalated`).

Failures (timeout, transport error, unparsable answer, overflow, shutdown) keep the previous
decision's tier and resolve by the fail mode — fail-closed: `block`; fail-open: `escalate`, never
allow — with the reason `<stage> judgment <timeout|failed>: <error> [unresolved escalation, …];
<previous reason>`. Every call is counted in `tier_calls{tier, outcome}`.

`attach(services)` wires this into a `Services` once; see its docstring."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp

from anysentry.api.services import PolicyState
from anysentry.events.ids import hash_id
from anysentry.events.model import AgentEvent, Observation
from anysentry.events.timefmt import iso_time, now_ms
from anysentry.judge.decision import (
    FAIL_CLOSED_SUFFIX,
    FAIL_OPEN_SUFFIX,
    Action,
    Decision,
    apply_decision,
    at_least,
    severity_rank,
)
from anysentry.judge.engine import Judge
from anysentry.judge.investigator import bounded_timeline, investigate
from anysentry.judge.llm import (
    DEEP,
    FAST,
    PROFILES,
    Connection,
    LlmReviewer,
    TierAnswer,
    TierError,
    event_context,
    resolve_connection,
)
from anysentry.judge.policy import sanitize_policy
from anysentry.judge.risk import risk_for
from anysentry.store.writer import BufferFull

log = logging.getLogger("anysentry.tiers")

STAGE_PROFILE = {"L2": FAST, "L3": DEEP}
STAGE_TIER = {"L2": "Llm", "L3": "Agent"}
PROFILE_STAGE = {FAST: "L2", DEEP: "L3"}
SPECULATE_FLOOR = {"low": "low", "medium": "medium", "high": "high"}  # policy.speculate → min L1 severity

DEFAULT_CONCURRENCY = 4
DEFAULT_QUEUE = 256
PREPARED_TTL_SECS = 60.0  # a prepared row whose batch was never written (buffer full) is forgotten
TEST_TOKEN_TTL_MS = 5 * 60 * 1000
TEST_TOKENS_MAX = 32
TEST_TIMEOUT_MAX_S = 30
TIMELINE_WINDOW_MS = 3_600_000
WRITE_ATTEMPTS = 6
REASON_LIMIT = 1000

TEST_CONTEXT = {"eventKind": "ToolExec", "eventCategory": "tool", "source": "api", "subject": "git status",
                "agentId": "anysentry-connection-test", "attributes": {"connectionTest": True}}
TEST_L1 = {"verdict": "escalate", "severity": "low", "reason": "connection test: answer allow"}


def _env_int(name: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(os.environ.get(name, default))))
    except ValueError:
        return default


def decision_of(event: AgentEvent) -> Decision:
    """The decision an already judged event carries (its risk by category, its action)."""
    action = Action(event.actionKind, event.actionTarget) if event.actionKind else None
    risk = None if event.verdict == "allow" else risk_for(event.riskCategory)
    return Decision(event.verdict, event.tier, event.severity, event.reason, action, risk)


def resolve_by_fail_mode(decision: Decision, fail_closed: bool) -> Decision:
    """§9.2 step 6 for a deeper tier's escalation: block (fail-closed) or a visible escalate."""
    verdict, suffix = ("block", FAIL_CLOSED_SUFFIX) if fail_closed else ("escalate", FAIL_OPEN_SUFFIX)
    return Decision(verdict, decision.tier, at_least(decision.severity, "low"), (decision.reason + suffix)[:REASON_LIMIT],
                    decision.action, decision.risk)


def failure_decision(previous: Decision, stage: str, error: TierError, fail_closed: bool) -> tuple[Decision, str]:
    """A stage that gave no answer: the previous decision resolved by the fail mode, reason
    `<stage> judgment <status>: <error> [unresolved escalation, …]; <previous reason>`."""
    status = error.status
    suffix = FAIL_CLOSED_SUFFIX if fail_closed else FAIL_OPEN_SUFFIX
    before = previous.reason if previous.tier != "Rules" else "L1: " + previous.reason
    reason = f"{stage} judgment {status}: {error}{suffix}; {before}"[:REASON_LIMIT]
    decision = Decision("block" if fail_closed else "escalate", previous.tier, at_least(previous.severity, "low"), reason,
                        previous.action, previous.risk)
    return decision, f"{stage.lower()}_{'timeout' if status == 'timeout' else 'failed'}"


@dataclass(slots=True, eq=False)
class _Work:
    """One pending event: the L1 row as written, the raw L1 subject and the policy it was judged by."""

    event: AgentEvent
    raw_subject: str | None
    policy: dict
    version: str
    fail_closed: bool
    stages: tuple[str, ...]
    speculative: bool
    current: Decision  # the latest decision (L1, then L2's escalation)
    stage: str  # the stage being asked
    prepared_at: float
    revision_at: int


class TieredPolicyState(PolicyState):
    """`PolicyState` whose judge knows which deeper tiers are usable (policy + keys + connections)."""

    def __init__(self, tiers: "DeeperTiers", policy: dict | None = None, locked: bool = False):
        self.tiers = tiers
        super().__init__(policy, locked)

    def set(self, policy: dict) -> None:
        sanitized = sanitize_policy(policy)
        judge = Judge(sanitized, deeper_tiers=self.tiers.available(sanitized))  # raises before anything changes
        self.policy, self.judge = sanitized, judge

    def refresh(self) -> None:
        """Rebuild the judge after a connection or key change (same policy)."""
        self.set(self.policy)

    def key_configured(self, profile: str) -> bool:
        return self.tiers.key_configured(profile, self.policy)

    def tier_status(self) -> dict:
        return self.tiers.status(self.policy)


class DeeperTiers:
    def __init__(self, services, *, concurrency: int | None = None, queue_limit: int | None = None,
                 shutdown_grace: float = 2.0):
        self.services = services
        self.concurrency = concurrency or _env_int("ANYSENTRY_TIER_CONCURRENCY", DEFAULT_CONCURRENCY, 1, 256)
        self.queue_limit = queue_limit or _env_int("ANYSENTRY_TIER_QUEUE", DEFAULT_QUEUE, 1, 100_000)
        self.shutdown_grace = shutdown_grace
        self.reviewer = LlmReviewer()
        self.memory: dict[str, Connection] = {}  # activated through the model-connection API (never persisted)
        self.activated_at: dict[str, int] = {}
        self._tests: OrderedDict[str, tuple[Connection, int]] = OrderedDict()
        self._prepared: OrderedDict[str, _Work] = OrderedDict()
        self._running: dict[str, _Work] = {}
        self._interrupted: list[_Work] = []
        self._outstanding = 0  # prepared + running: what the queue bound counts
        self._tasks: set[asyncio.Task] = set()
        self._sem: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- connections ----------------------------------------------------------------------------

    def connection(self, profile: str, policy: dict | None) -> Connection:
        return resolve_connection(profile, policy, self.memory.get(profile))

    def available(self, policy: dict | None) -> frozenset:
        return frozenset(stage for stage, profile in STAGE_PROFILE.items() if self.connection(profile, policy).usable)

    def key_configured(self, profile: str, policy: dict | None) -> bool:
        return profile in PROFILES and bool(self.connection(profile, policy).api_key)

    def status(self, policy: dict | None) -> dict:
        usable = self.available(policy)
        return {"l1": True, "l2": "L2" in usable, "l3": "L3" in usable}

    def views(self, policy: dict | None) -> dict:
        out = {}
        for profile in PROFILES:
            view = self.connection(profile, policy).view()
            view["tier"] = PROFILE_STAGE[profile]
            view["activatedAt"] = iso_time(self.activated_at[profile]) if profile in self.memory else None
            out[profile] = view
        return out

    def issue_test_token(self, conn: Connection) -> tuple[str, int]:
        now = now_ms()
        for token in [t for t, (_, expires) in self._tests.items() if expires <= now]:
            del self._tests[token]
        while len(self._tests) >= TEST_TOKENS_MAX:
            self._tests.popitem(last=False)
        token = "mct_" + secrets.token_urlsafe(24)
        expires = now + TEST_TOKEN_TTL_MS
        self._tests[token] = (conn, expires)
        return token, expires

    def redeem_test_token(self, token: str, profile: str) -> Connection | None:
        entry = self._tests.get(token)
        if entry is None or entry[1] <= now_ms() or entry[0].profile != profile:
            return None
        del self._tests[token]  # single use
        return entry[0]

    def activate(self, conn: Connection) -> None:
        self.memory[conn.profile] = dataclasses.replace(conn, source="memory")
        self.activated_at[conn.profile] = now_ms()
        self._refresh_policy()

    def clear(self, profile: str) -> bool:
        existed = self.memory.pop(profile, None) is not None
        self.activated_at.pop(profile, None)
        self._refresh_policy()
        return existed

    def _refresh_policy(self) -> None:
        policy = self.services.policy
        if hasattr(policy, "refresh"):
            policy.refresh()

    async def test_connection(self, conn: Connection) -> dict:
        """Call the endpoint once with a harmless probe; never raises, never returns the key."""
        started = time.perf_counter()
        answer: TierAnswer | None = None
        error = None
        try:
            if conn.profile == FAST:
                answer = await self.reviewer.review(self._client(), conn, TEST_CONTEXT, None, TEST_L1)
            else:
                answer = await investigate(self._client(), conn, TEST_CONTEXT, [], None)
        except TierError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a probe reports, it does not fail the request
            log.warning("model connection test failed unexpectedly: %s", type(exc).__name__)
            error = f"unexpected {type(exc).__name__}"
        out = {"ok": answer is not None, "profile": conn.profile, "url": conn.url, "model": conn.model,
               "timeoutS": conn.timeout_s, "latencyMs": round((time.perf_counter() - started) * 1000, 1),
               "error": error, "answer": {"verdict": answer.verdict, "severity": answer.severity} if answer else None}
        if conn.profile == DEEP:
            out["contextTokens"] = conn.context_tokens
        return out

    # -- ingest hooks ---------------------------------------------------------------------------

    def prepare(self, obs: Observation, event: AgentEvent, judge: Judge) -> None:
        """After L1, before the write: mark an eligible escalation pending (or resolve it now when
        the queue is full). Anything else is left untouched."""
        judgment = event.judgment
        if (event.verdict != "escalate" or not isinstance(judgment, dict) or not judgment.get("nextTierEligible")
                or judgment.get("stopReason") or judgment.get("profile") != "full"
                or judgment.get("maxTier") not in ("L2", "L3")):
            return
        stages = tuple(stage for stage in ("L2", "L3") if stage in judge.deeper_tiers)
        if not stages:
            return
        l1 = decision_of(event)
        self._purge_stale()
        event_id = event.eventId
        if event_id in self._prepared or event_id in self._running:
            # the same event again while it is being judged: the run under way writes the newer revision
            self._mark_pending(event, stages[0])
            return
        if self._outstanding >= self.queue_limit:
            self._count(stages[0], "overflow")
            error = TierError(f"queue full ({self.queue_limit} events awaiting judgment)")
            decision, stop = failure_decision(l1, stages[0], error, judge.fail_closed)
            apply_decision(event, decision, policy_version=judge.version, judgment={**judgment, "stopReason": stop})
            return
        speculate = SPECULATE_FLOOR.get(judge.policy.get("speculate", "off"))
        speculative = (stages == ("L2", "L3") and speculate is not None
                       and severity_rank(event.severity) >= severity_rank(speculate))
        self._outstanding += 1
        self._prepared[event_id] = _Work(event, obs.judge_subject, judge.policy, judge.version, judge.fail_closed,
                                         stages, speculative, l1, stages[0], time.monotonic(),
                                         event.decisionUpdatedAt or event.at)
        self._mark_pending(event, stages[0])

    def dispatch(self, events: list[AgentEvent]) -> list[AgentEvent]:
        """After the write: start judging the pending rows; return the final events (for the ops
        listeners). Must run on the event loop."""
        final = []
        for event in events:
            if event.decisionStatus != "pending":
                final.append(event)
                continue
            work = self._prepared.get(event.eventId)
            if work is not None and work.event is event:
                del self._prepared[event.eventId]
                self._start(work)
        return final

    @staticmethod
    def _mark_pending(event: AgentEvent, stage: str) -> None:
        event.decisionStatus = "pending"
        event.reason = f"{event.reason} [awaiting {stage}]"

    def _purge_stale(self) -> None:
        cutoff = time.monotonic() - PREPARED_TTL_SECS
        while self._prepared:
            event_id, work = next(iter(self._prepared.items()))
            if work.prepared_at > cutoff:
                break
            del self._prepared[event_id]
            self._outstanding -= 1

    # -- background judgment --------------------------------------------------------------------

    def _start(self, work: _Work) -> None:
        self._running[work.event.eventId] = work
        task = asyncio.get_running_loop().create_task(self._run(work), name=f"tier-{work.event.eventId}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: _Work) -> None:
        try:
            try:
                if self._sem is None:
                    self._sem = asyncio.Semaphore(self.concurrency)
                async with self._sem:
                    decision, stop = await self._decide(work)
            except asyncio.CancelledError:
                self._interrupted.append(work)
                raise
            except Exception:
                log.exception("deeper-tier judgment of %s failed", work.event.eventId)
                decision, stop = failure_decision(work.current, work.stage, TierError("internal error"), work.fail_closed)
            try:
                await self._write(work, decision, stop)
            except Exception:
                log.exception("deeper-tier revision of %s not written", work.event.eventId)
        finally:
            if self._running.get(work.event.eventId) is work:
                del self._running[work.event.eventId]
            self._outstanding -= 1

    async def _decide(self, work: _Work) -> tuple[Decision, str]:
        context = event_context(work.event)
        l1 = work.current
        if work.stages[0] == "L3":  # only the deep tier is configured
            try:
                answer = await self._l3(work, context, None)
            except TierError as exc:
                return failure_decision(l1, "L3", exc, work.fail_closed)
            return self._final(work, answer, "Agent")

        speculative = asyncio.ensure_future(self._l3(work, context, None)) if work.speculative else None
        try:
            try:
                answer = await self._l2(work, context)
            except TierError as exc:
                if speculative is not None:  # the deep answer already asked for still decides
                    try:
                        return self._final(work, await speculative, "Agent")
                    except TierError:
                        pass
                return failure_decision(l1, "L2", exc, work.fail_closed)
            if answer.verdict != "escalate":
                return self._final(work, answer, "Llm")
            escalation = Decision("escalate", "Llm", answer.severity, answer.reason, l1.action, l1.risk)
            work.current = escalation
            if "L3" not in work.stages:
                return resolve_by_fail_mode(escalation, work.fail_closed), "l3_not_configured"
            await self._write(work, escalation, "l2_escalated", status="pending", suffix=" [awaiting L3]")
            work.stage = "L3"
            try:
                final = await speculative if speculative is not None else await self._l3(work, context, answer.to_dict())
            except TierError as exc:
                return failure_decision(escalation, "L3", exc, work.fail_closed)
            return self._final(work, final, "Agent")
        finally:
            if speculative is not None:
                if not speculative.done():
                    speculative.cancel()
                else:
                    speculative.cancelled() or speculative.exception()  # mark retrieved

    def _final(self, work: _Work, answer: TierAnswer, tier: str) -> tuple[Decision, str]:
        l1 = work.current
        if answer.verdict == "allow":
            return Decision("allow", tier, "info", answer.reason), "decision_final"
        decision = Decision(answer.verdict, tier, answer.severity, answer.reason, l1.action, l1.risk)
        if answer.verdict == "escalate":  # L3 is terminal: its escalation is coerced by the fail mode
            decision = resolve_by_fail_mode(decision, work.fail_closed)
        return decision, "decision_final"

    async def _l2(self, work: _Work, context: dict) -> TierAnswer:
        conn = self.connection(FAST, work.policy)
        l1 = {"verdict": "escalate", "severity": work.current.severity, "reason": work.current.reason}
        return await self._counted("L2", self.reviewer.review(self._client(), conn, context, work.raw_subject, l1))

    async def _l3(self, work: _Work, context: dict, l2_opinion: dict | None) -> TierAnswer:
        conn = self.connection(DEEP, work.policy)
        timeline = await self._timeline(work.event)
        return await self._counted("L3", investigate(self._client(), conn, context, timeline, l2_opinion))

    async def _counted(self, stage: str, call) -> TierAnswer:
        try:
            answer = await call
        except TierError as exc:
            self._count(stage, exc.outcome)
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s call failed unexpectedly", stage)
            self._count(stage, "error")
            raise TierError(f"unexpected {type(exc).__name__}") from None
        self._count(stage, "ok")
        return answer

    def _count(self, stage: str, outcome: str) -> None:
        self.services.metrics.tier_calls.labels(stage, outcome).inc()

    async def _timeline(self, event: AgentEvent) -> list[dict]:
        """The session's recent events (latest revision each, newest first, bounded), for L3."""
        store = self.services.store
        try:
            async with asyncio.timeout(5):
                await self.services.writer.sync()
                rows = await store.aquery_dicts(
                    f"SELECT at, eventId, eventKind, subject, verdict, tier, severity, reason, decisionStatus "
                    f"FROM {store.events_table} WHERE at BETWEEN {{lo:UInt64}} AND {{hi:UInt64}} "
                    "AND sessionId = {session:String} AND agentId = {agent:String} AND eventId != {id:String} "
                    "ORDER BY at DESC, decisionUpdatedAt DESC LIMIT 1 BY eventId LIMIT 40",
                    {"lo": max(0, event.at - TIMELINE_WINDOW_MS), "hi": event.at, "session": event.sessionId,
                     "agent": event.agentId, "id": event.eventId})
        except Exception as exc:  # the investigation still runs, with less context
            log.warning("timeline for %s unavailable: %s", event.eventId, exc)
            return []
        return bounded_timeline(rows)

    # -- revisions ------------------------------------------------------------------------------

    def _revision(self, work: _Work, decision: Decision, stop: str, status: str, suffix: str) -> AgentEvent:
        event = work.event
        revision = dataclasses.replace(event)
        judgment = dict(event.judgment or {})
        judgment["stopReason"] = stop
        apply_decision(revision, decision, policy_version=work.version, judgment=judgment)
        if suffix:
            revision.reason += suffix
        revision.decisionStatus = status
        work.revision_at = max(now_ms(), work.revision_at + 1)
        revision.decisionUpdatedAt = work.revision_at
        revision.evaluationId = hash_id("eval", [event.eventId, work.version, decision.tier, status])
        return revision

    async def _write(self, work: _Work, decision: Decision, stop: str, *, status: str = "succeeded", suffix: str = "") -> None:
        revision = self._revision(work, decision, stop, status, suffix)
        await self._submit([revision], final=status != "pending")

    async def _submit(self, revisions: list[AgentEvent], *, final: bool) -> None:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await self.services.writer.submit(revisions)
                break
            except BufferFull:
                await asyncio.sleep(min(8.0, 0.25 * 2 ** attempt))
        else:
            log.error("buffer full: %d deeper-tier revision(s) not written (%s)", len(revisions),
                      ", ".join(r.eventId for r in revisions[:5]))
            return
        if final:
            self._deliver(revisions)

    def _deliver(self, events: list[AgentEvent]) -> None:
        for listener in list(self.listeners):
            try:
                listener(events)
            except Exception:  # one listener's failure must not lose the revision for the others
                log.exception("listener failed on a deeper-tier revision")

    @property
    def listeners(self) -> list:
        """The ops listeners final events go to."""
        return self.services.pipeline.listeners

    # -- lifecycle ------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=True)
        return self._session

    @property
    def in_flight(self) -> int:
        return self._outstanding

    async def drain(self, timeout: float | None = 30.0) -> None:
        """Wait until every started judgment has written its revision (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"{len(self._tasks)} deeper-tier judgments still running")
            await asyncio.wait(set(self._tasks), timeout=remaining)

    async def close(self, _services=None) -> None:
        """Shutdown hook: a short grace for running judgments, then the unfinished ones are
        resolved by the fail mode (so no row stays pending), and the HTTP session is closed."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        interrupted, self._interrupted = self._interrupted, []
        revisions = []
        for work in interrupted:
            decision, stop = failure_decision(work.current, work.stage, TierError("service stopped before an answer"),
                                              work.fail_closed)
            revisions.append(self._revision(work, decision, stop, "succeeded", ""))
        if revisions:
            await self._submit(revisions, final=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


def attach(services, **options) -> DeeperTiers:
    """Enable the deeper tiers on a `Services` (once; idempotent). Call it after the pipeline's
    listeners are registered (end of `Services.__post_init__`) and before the app starts:

    - `services.policy` becomes a `TieredPolicyState` (same policy, same lock) whose judge has the
      usable deeper tiers, and the pipeline judges with it;
    - the pipeline calls `prepare`/`dispatch` through its `tiers` attribute;
    - `services.tiers` is set (the model-connection routes use it) and a shutdown hook added."""
    existing = getattr(services, "tiers", None)
    if isinstance(existing, DeeperTiers):  # already attached: only apply the options given
        for name in ("concurrency", "queue_limit", "shutdown_grace"):
            if options.get(name) is not None:
                setattr(existing, name, options[name])
        return existing
    tiers = DeeperTiers(services, **options)
    old = services.policy
    services.policy = TieredPolicyState(tiers, old.policy, locked=old.locked)
    pipeline = services.pipeline
    pipeline.judge = services.policy.current
    pipeline.tiers = tiers
    services.tiers = tiers
    services.shutdown_hooks.append(tiers.close)
    return tiers


__all__ = ["DeeperTiers", "TieredPolicyState", "attach", "failure_decision", "resolve_by_fail_mode"]
