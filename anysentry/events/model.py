"""The canonical event `anysentry.agent_event.v1` (SPEC §7.1) and what normalisers hand the judge.

Field names are the wire and column names, so an event serialises (orjson) and stores as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import orjson

SCHEMA_VERSION = "anysentry.agent_event.v1"
EVENT_SOURCES = ("observer", "synthetic", "api")


@dataclass(slots=True)
class AgentEvent:
    eventId: str
    at: int
    eventKind: str
    eventCategory: str
    source: str
    subject: str
    workspacePath: str
    agentId: str
    sessionId: str
    userId: str
    traceId: str
    spanId: str
    runId: str
    schemaVersion: str = SCHEMA_VERSION
    sourceEventId: str = ""
    collectorId: str = ""
    sourceId: str = ""
    parentSpanId: str = ""
    taskId: str = ""
    decisionStatus: str = "succeeded"
    evaluationId: str = ""
    policyVersion: str = ""
    decisionUpdatedAt: int = 0
    verdict: str = "allow"
    tier: str = "Rules"
    severity: str = "info"
    reason: str = ""
    actionKind: str = ""
    actionTarget: str = ""
    riskCategory: str = "benign"
    riskName: str = "Benign"
    riskType: str = ""
    riskScore: float = 0.0
    tokenCount: int = 0
    latencyMs: float = 0.0
    attributes: dict = field(default_factory=dict)
    process: dict | None = None
    attribution: dict | None = None
    judgment: dict | None = None
    rawPreview: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    def __reduce__(self) -> tuple:
        """Pickled as its field values in order (an event a worker process hands the service):
        the dataclass default (its state set field by field in Python) costs about twice as much."""
        return AgentEvent, event_values(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AgentEvent":
        """Rebuild from a stored row or a serialised event; unknown keys are ignored."""
        known = {k: data[k] for k in EVENT_FIELDS if k in data}
        for key in JSON_FIELDS:
            value = known.get(key)
            if isinstance(value, (str, bytes)):
                known[key] = orjson.loads(value) if value else ({} if key == "attributes" else None)
        return cls(**known)


EVENT_FIELDS = tuple(f.name for f in fields(AgentEvent))
JSON_FIELDS = ("attributes", "process", "attribution", "judgment")


def _values_function() -> Callable[[AgentEvent], tuple]:
    """`event_values(event)`: the event's field values in EVENT_FIELDS order — its row, and the
    arguments of `AgentEvent(...)`. Written out as dataclasses write an `__init__`: the interpreter's
    per-site attribute caches make it ~30% faster than an attrgetter of the 40 names (~0.3 µs an event)."""
    namespace: dict = {}
    exec(f"def event_values(event):\n    return ({', '.join(f'event.{name}' for name in EVENT_FIELDS)},)\n", namespace)
    return namespace["event_values"]


event_values = _values_function()


@dataclass(slots=True)
class Observation:
    """A normalised, redacted event plus the transient input of the L1 judge.

    `judge_subject` is the raw L1 subject (§6.2): SslContent is judged before redaction so a secret
    in outbound content can be recognised. It lives only in memory and is never serialised."""

    event: AgentEvent
    judge_kind: str
    judge_subject: str | None
    evidence_incomplete: bool = False
    classification: str = "unknown"

    def __reduce__(self) -> tuple:
        return Observation, (self.event, self.judge_kind, self.judge_subject, self.evidence_incomplete, self.classification)


@dataclass(slots=True)
class Rejection:
    """An input item that could not become an event, with the reason a producer is told."""

    reason: str
    index: int | None = None


@dataclass(slots=True)
class Heartbeat:
    """A `CollectorHeartbeat` line: control-plane only, recorded, never judged (§23.1)."""

    payload: dict


@dataclass(slots=True, frozen=True)
class SourceContext:
    """What a resolved ingestion source contributes to its events (ids and identity gaps)."""

    sourceId: str = ""
    workspacePath: str = ""
    collectorId: str = ""


@dataclass(slots=True)
class ParsedBody:
    """A producer request split into request-level fields and per-event items.

    `request` holds source credentials and defaults (sourceId, sourceName, sourceType, token,
    collectorId, nodeName, workspacePath, ...); `items` are /ingest items for `observer.normalize`
    or `Rejection`s (with their index), in input order."""

    request: dict = field(default_factory=dict)
    items: list = field(default_factory=list)
