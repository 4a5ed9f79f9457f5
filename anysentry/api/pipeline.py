"""The ingest path of DESIGN §1: resolve source → normalise (redacted) → judge L1 → durable write.

Every producer endpoint and the runtime guard go through `IngestPipeline.ingest`, so identity,
judgment, counting and durability are the same whatever the format. An answer with
`accepted: true` is given only after the batch is in the durable local buffer (fsync). Large batches
are normalised and judged by the same `judge_item` in worker processes (`ingest_workers`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import orjson

from anysentry.events.model import AgentEvent, Heartbeat, Observation, ParsedBody, Rejection, SourceContext
from anysentry.events.observer import UNPARSEABLE, normalize
from anysentry.events.timefmt import iso_time, now_ms
from anysentry.events.workloads import WorkloadIndex
from anysentry.judge.decision import apply_decision
from anysentry.ops.collectors import CollectorRegistry
from anysentry.ops.sources import SourceRegistry
from anysentry.store import event_rows
from anysentry.store.writer import BufferFull

SOURCE_FIELDS = ("sourceId", "sourceName", "sourceType", "token", "collectorId", "nodeName", "workspacePath")


class BufferFullError(Exception):
    """The durable buffer is full: nothing of the request was accepted; the producer retries."""


@dataclass(slots=True)
class IngestOutcome:
    """The answer to one request. `items` holds a dict per item, except that a worker's run of
    consecutive accepted answers arrives already serialised, as one `orjson.Fragment` standing for
    `in_runs` answers in all (`AnswerRun`): serialised where they were judged, not copied back as objects."""

    source: dict | None
    items: list = field(default_factory=list)
    events: list[AgentEvent] = field(default_factory=list)
    in_runs: int = 0
    runs: int = 0

    @property
    def accepted(self) -> int:
        return self.in_runs + sum(1 for i in self.items if type(i) is dict and i.get("accepted"))

    def batch_answer(self) -> dict:
        accepted = self.accepted
        return {"accepted": accepted > 0, "sourceId": self.source_id, "acceptedEvents": accepted,
                "rejectedEvents": len(self.items) - self.runs + self.in_runs - accepted, "items": self.items}

    def add_run(self, run: "AnswerRun") -> None:
        self.items.append(orjson.Fragment(run.json))
        self.in_runs += run.count
        self.runs += 1

    @property
    def source_id(self) -> str | None:
        return self.source["sourceId"] if self.source else None


def credentials(request_fields: dict, headers) -> dict:
    """Producer credentials (§22.2): body fields, then `X-AnySentry-Ingest-Token` / Bearer and
    `X-AnySentry-Source-Id` headers."""
    creds = {k: request_fields.get(k) for k in SOURCE_FIELDS if request_fields.get(k) not in (None, "")}
    if not creds.get("token") and headers is not None:
        token = headers.get("X-AnySentry-Ingest-Token", "").strip()
        if not token:
            auth = headers.get("Authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if token:
            creds["token"] = token
    if not creds.get("sourceId") and headers is not None and headers.get("X-AnySentry-Source-Id"):
        creds["sourceId"] = headers["X-AnySentry-Source-Id"].strip()
    return creds


def event_answer(event: AgentEvent, index: int | None = None) -> dict:
    """The per-item answer for an accepted event (led by its `index` in the request when given)."""
    if index is None:
        return {"accepted": True, "sourceId": event.sourceId or None, "eventId": event.eventId,
                "traceId": event.traceId, "spanId": event.spanId, "runId": event.runId, "verdict": event.verdict,
                "tier": event.tier, "severity": event.severity, "reason": event.reason,
                "riskCategory": event.riskCategory, "decisionStatus": event.decisionStatus,
                "evaluationId": event.evaluationId}
    return {"index": index, "accepted": True, "sourceId": event.sourceId or None, "eventId": event.eventId,
            "traceId": event.traceId, "spanId": event.spanId, "runId": event.runId, "verdict": event.verdict,
            "tier": event.tier, "severity": event.severity, "reason": event.reason,
            "riskCategory": event.riskCategory, "decisionStatus": event.decisionStatus,
            "evaluationId": event.evaluationId}


def judge_item(item: object, judge, *, context: SourceContext | None, default_source: str, now: int | None,
               workload: Callable | None = None, review: Callable | None = None) -> Observation | Heartbeat | Rejection:
    """One item through normalise (with pod identity from `workload`) → human review → L1: an
    Observation comes back with its event decided; anything else is a heartbeat or the reason it was
    not accepted. Pure given its arguments, so an ingest worker process runs the very same steps."""
    if isinstance(item, Rejection):
        return item
    result = normalize(item, source=context, default_source=default_source, now=now, workload=workload)
    if not isinstance(result, Observation):
        return result
    if review is not None:
        review(result)
    outcome = judge.decide(result)
    if outcome is None:
        return Rejection(UNPARSEABLE)
    decision, judgment = outcome
    apply_decision(result.event, decision, policy_version=judge.version, judgment=judgment)
    return result


def rejection_answer(index: int, reason: str, source_id: str | None) -> dict:
    return {"index": index, "accepted": False, "reason": reason, "sourceId": source_id}


@dataclass(slots=True)
class AnswerRun:
    """Consecutive accepted answers as the JSON text of their list without its brackets."""

    json: bytes
    count: int

    @classmethod
    def of(cls, answers: list[dict]) -> "AnswerRun":
        return cls(orjson.dumps(answers)[1:-1], len(answers))


@dataclass(slots=True)
class PlainEvents:
    """Final allow events judged in a worker process, which only need storing: their serialised WAL
    payload and what accounting needs, instead of the objects."""

    payload: bytes
    count: int  # at least one
    last_at: int


@dataclass(slots=True)
class PreparedBatch:
    """A request normalised and judged, not yet durable: what `commit` writes and accounts for."""

    outcome: IngestOutcome
    record: dict | None
    creds: dict
    now: int | None
    heartbeats: list = field(default_factory=list)  # (item index, position in outcome.items, payload)
    rejections: dict = field(default_factory=dict)
    resolution_rejection: tuple[str, int] | None = None
    plain: PlainEvents | None = None


class IngestPipeline:
    def __init__(self, *, sources: SourceRegistry, collectors: CollectorRegistry, writer, metrics, judge: Callable):
        self.sources = sources
        self.collectors = collectors
        self.writer = writer
        self.metrics = metrics
        self.judge = judge  # returns the current Judge: a policy change applies to the next event
        # Receive final decisions; of a batch judged by the ingest workers, only the non-allow ones
        # (allow events come back serialised, not as objects, and no listener acts on them).
        self.listeners: list[Callable[[list[AgentEvent]], None]] = []
        self.tiers = None  # anysentry.api.tiers.DeeperTiers, set by tiers.attach()
        self.review_lookup: Callable[[dict], dict | None] | None = None  # human review decisions (§7.6)
        self.workloads: WorkloadIndex | None = None  # Kubernetes pod identity (§7.6), set by operator.pods.attach
        self.reviews_present: Callable[[], bool] | None = None  # whether any human review exists
        self.workers = None  # anysentry.api.ingest_workers.IngestWorkers: large batches judged in other processes

    def _apply_review(self, obs: Observation) -> None:
        """A human review matching the event's identity overrides its classification (§7.6)."""
        event = obs.event
        review = self.review_lookup({"workspacePath": event.workspacePath, "agentId": event.agentId,
                                     "sessionId": event.sessionId, "attribution": event.attribution, "process": event.process})
        if review is None or review.get("decision") not in ("confirmed_agent", "unknown", "non_agent"):
            return
        decision = review["decision"]
        event.attribution = {**(event.attribution or {}), "classification": decision, "source": "manual_review",
                             "confidence": 1, "monitored": decision != "non_agent", "reason": "human review"}
        obs.classification = decision

    def _reviewer(self) -> Callable[[Observation], None] | None:
        return self._apply_review if self.review_lookup is not None else None

    def _workload(self) -> Callable | None:
        return self.workloads.match if self.workloads is not None else None

    def _offloadable(self, parsed: ParsedBody) -> bool:
        """A large batch goes to the ingest workers unless this process's identity state must be
        consulted per event (pod identities, human reviews), which the workers do not hold."""
        workers = self.workers
        return (workers is not None and len(parsed.items) >= workers.min_items
                and not (self.workloads is not None and len(self.workloads))
                and not (self.reviews_present is not None and self.reviews_present())
                and workers.available())

    async def ingest(self, parsed: ParsedBody, *, headers=None, default_type: str = "custom",
                     default_source: str = "api", now: int | None = None) -> IngestOutcome:
        """Judge and durably buffer one request's items; BufferFullError leaves nothing accepted."""
        offload = self._offloadable(parsed)
        batch = self._resolve(parsed, headers, default_type, now)
        if batch.resolution_rejection is None and parsed.items:
            if not (offload and await self._judge_in_workers(batch, parsed, default_source, now)):
                self._judge_here(batch, parsed, default_source, now)
        await self.commit(batch)
        return batch.outcome

    def _resolve(self, parsed: ParsedBody, headers, default_type: str, now: int | None) -> PreparedBatch:
        """The source of a request; a rejected resolution answers every item at once."""
        creds = credentials(parsed.request, headers)
        resolution = self.sources.resolve(creds, default_type=default_type, now=now)
        outcome = IngestOutcome(resolution.source)
        batch = PreparedBatch(outcome, resolution.source, creds, now)
        if resolution.rejection:
            outcome.items.extend(rejection_answer(index, resolution.rejection, outcome.source_id)
                                 for index in range(len(parsed.items)))
            if parsed.items:
                batch.resolution_rejection = (resolution.rejection, len(parsed.items))
        return batch

    @staticmethod
    def _context(record: dict | None) -> SourceContext | None:
        return SourceContext(record["sourceId"], record.get("workspacePath", ""), record.get("collectorId", "")) if record else None

    def prepare(self, parsed: ParsedBody, *, headers=None, default_type: str = "custom",
                default_source: str = "api", now: int | None = None) -> "PreparedBatch":
        """Resolve the source, normalise and judge: nothing is written or counted until `commit`."""
        batch = self._resolve(parsed, headers, default_type, now)
        if batch.resolution_rejection is None and parsed.items:
            self._judge_here(batch, parsed, default_source, now)
        return batch

    def _judge_here(self, batch: PreparedBatch, parsed: ParsedBody, default_source: str, now: int | None) -> None:
        outcome = batch.outcome
        context = self._context(batch.record)
        judge = self.judge()  # one policy for the whole request
        workload, review = self._workload(), self._reviewer()
        started = time.perf_counter()
        for index, item in enumerate(parsed.items):
            result = judge_item(item, judge, context=context, default_source=default_source, now=now,
                                workload=workload, review=review)
            if isinstance(result, Observation):
                self._keep(outcome, index, result, judge)
            elif isinstance(result, Heartbeat):
                batch.heartbeats.append((index, len(outcome.items), result.payload))
                outcome.items.append({"index": index})  # filled in once recorded
            else:
                self._reject(batch, index, result.reason)
        if outcome.events:
            self.metrics.judge_latency.observe((time.perf_counter() - started) / len(outcome.events))

    def _keep(self, outcome: IngestOutcome, index: int, obs: Observation, judge) -> None:
        event = obs.event
        if self.tiers is not None:
            self.tiers.prepare(obs, event, judge)  # an L1 escalation for L2/L3 becomes `pending`
        outcome.events.append(event)
        outcome.items.append(event_answer(event, index))

    @staticmethod
    def _reject(batch: PreparedBatch, index: int, reason: str) -> None:
        batch.rejections[reason] = batch.rejections.get(reason, 0) + 1
        batch.outcome.items.append(rejection_answer(index, reason, batch.outcome.source_id))

    async def _judge_in_workers(self, batch: PreparedBatch, parsed: ParsedBody, default_source: str,
                                now: int | None) -> bool:
        """`_judge_here` done by a worker process (normalise, judge, serialise); False when no worker
        could take the batch, which is then untouched."""
        judge = self.judge()
        judged = await self.workers.judge(parsed.items, judge, context=self._context(batch.record),
                                          default_source=default_source, now=now)
        if judged is None:
            self.metrics.worker_batches.labels("service").inc()
            return False
        self.metrics.worker_batches.labels("workers").inc()
        outcome = batch.outcome
        heartbeats = dict(judged.heartbeats)
        for answer in judged.answers:
            if type(answer) is AnswerRun:
                outcome.add_run(answer)
            elif type(answer) is tuple:  # (index, Observation) of an event the service keeps
                self._keep(outcome, answer[0], answer[1], judge)
            else:
                index = answer["index"]
                if index in heartbeats:
                    batch.heartbeats.append((index, len(outcome.items), heartbeats[index]))
                outcome.items.append(answer)
        for reason, count in judged.rejections.items():
            batch.rejections[reason] = batch.rejections.get(reason, 0) + count
        batch.plain = judged.plain
        events = len(outcome.events) + (judged.plain.count if judged.plain is not None else 0)
        if events:
            self.metrics.judge_latency.observe(judged.seconds / events)
        return True

    async def commit(self, *batches: "PreparedBatch") -> None:
        """Durably buffer the events of prepared batches in one write (one fsync: the runtime guard
        commits an action and its finding together), then count and notify per batch."""
        events = [event for batch in batches for event in batch.outcome.events]
        plain = [batch.plain for batch in batches if batch.plain is not None]
        if events or plain:
            parts = [p.payload for p in plain] + ([event_rows.payload(events)] if events else [])
            try:
                await self.writer.submit_serialised(event_rows.join(parts), len(events) + sum(p.count for p in plain))
            except BufferFull as exc:
                self.metrics.buffer_full.inc()
                raise BufferFullError(str(exc)) from exc
        for batch in batches:
            self._account(batch)

    def _account(self, batch: "PreparedBatch") -> None:
        outcome, record, creds, now = batch.outcome, batch.record, batch.creds, batch.now
        heartbeats, rejections, plain = batch.heartbeats, batch.rejections, batch.plain
        if batch.resolution_rejection is not None:
            reason, count = batch.resolution_rejection
            self.metrics.rejected.labels(reason).inc(count)
            return
        for index, position, payload in heartbeats:
            body = {**payload, "sourceId": outcome.source_id or ""}
            hb = self.collectors.record(body, now=now)
            self.metrics.heartbeats.inc()
            outcome.items[position] = {"index": index, "accepted": True, "sourceId": outcome.source_id,
                                       "collectorId": hb["collectorId"], "receivedAt": iso_time(hb["receivedAt"]),
                                       "kind": "collector-heartbeat"}
        for reason, count in rejections.items():
            self.metrics.rejected.labels(reason).inc(count)
            self.sources.record_rejection(record, creds, reason, count)
        verdicts: dict[str, int] = {"allow": plain.count} if plain is not None else {}
        for event in outcome.events:
            verdicts[event.verdict] = verdicts.get(event.verdict, 0) + 1
        stored = sum(verdicts.values())
        if stored or heartbeats:
            last_at = max([e.at for e in outcome.events] + ([plain.last_at] if plain is not None else []), default=None)
            self.sources.record_accepted(record, events=stored, heartbeats=len(heartbeats),
                                         at=now or now_ms(), last_event_at=last_at)
        if stored:
            label = outcome.source_id or "none"
            for verdict, count in verdicts.items():  # one labelled counter update per verdict, not per event
                self.metrics.ingested.labels(label, verdict).inc(count)
        if outcome.events:
            final = self.tiers.dispatch(outcome.events) if self.tiers is not None else outcome.events
            if final:
                for listener in self.listeners:
                    listener(final)
