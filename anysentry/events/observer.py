"""Observer NDJSON lines (SPEC §6) and the /ingest item body (§8.1) → canonical events (§7).

Every producer format ends here: API formats synthesise an observer line (§8.3.6) and pass the same
item shape, so identity, ids, subjects, attributes and redaction are derived in exactly one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Final

import orjson

from anysentry.events import kinds as K
from anysentry.events.ids import hash_id, part_text, sha1_hex
from anysentry.events.model import EVENT_SOURCES, SCHEMA_VERSION, AgentEvent, Heartbeat, Observation, Rejection, SourceContext
from anysentry.events.redact import (
    REDACTED, clean_value, has_marker, is_sensitive_key, redact_head, redact_text, sanitize_attributes,
)
from anysentry.events.timefmt import now_ms, parse_time

UNPARSEABLE: Final = "unparseable event"
RAW_PREVIEW_LIMIT: Final = 1800
JUDGE_SUBJECT_LIMIT: Final = 32 * 1024
SUBJECT_LIMIT: Final = 240
KIND_LIMIT: Final = 128
DEFAULT_LLM_ENDPOINTS = "api.anthropic.com,api.openai.com,api.deepseek.com"


@dataclass(frozen=True, slots=True)
class NormalizeSettings:
    llm_endpoints: tuple[str, ...]

    @classmethod
    def from_env(cls) -> "NormalizeSettings":
        raw = os.environ.get("ANYSENTRY_LLM_ENDPOINTS", DEFAULT_LLM_ENDPOINTS)
        return cls(tuple(e.strip().lower() for e in raw.split(",") if e.strip()))


_settings: NormalizeSettings | None = None


def default_settings() -> NormalizeSettings:
    global _settings
    if _settings is None:
        _settings = NormalizeSettings.from_env()
    return _settings


# payload keys copied to attributes when present (§7.5)
_COPIED: Final = (
    "pid", "ppid", "uid", "cwd", "comm", "exe", "cgroup", "systemdUnit", "hostId", "eventTimeNs", "startTimeNs",
    "peer", "port", "query", "path", "sni", "kind", "prompt_tokens", "completion_tokens", "argv_truncated",
    "argv_incomplete", "exec_confirmed", "argv_source", "captured_argc", "captured_bytes", "observed_argc",
    "observed_bytes", "model", "detail", "write", "exit_code", "signal",
)  # none of them is a sensitive key (§5.2)
_PROCESS_KEYS: Final = {
    "pid": "pid", "ppid": "ppid", "uid": "uid", "comm": "comm", "exe": "exe", "cwd": "cwd", "cgroup": "cgroup",
    "cgroupId": "cgroupId", "cgroup_id": "cgroupId", "systemdUnit": "systemdUnit", "systemd_unit": "systemdUnit",
    "hostId": "hostId", "host_id": "hostId", "bootId": "bootId", "boot_id": "bootId",
    "eventTimeNs": "eventTimeNs", "event_time_ns": "eventTimeNs", "startTimeNs": "startTimeNs",
    "start_time_ns": "startTimeNs", "startTimeTicks": "startTimeTicks", "start_time_ticks": "startTimeTicks",
    "mountNamespace": "mountNamespace", "mount_namespace": "mountNamespace",
}
_STRING_IDS: Final = frozenset({"cgroupId", "startTimeTicks", "eventTimeNs", "startTimeNs"})
_INT_MIN, _INT_END = -(2**63), 2**64  # integers clean_value keeps as they are


def parse_line(line: object) -> dict | Rejection:
    """One NDJSON record; blank lines, non-objects and bad JSON are `unparseable event`."""
    if isinstance(line, (bytes, bytearray)):
        stripped = bytes(line).lstrip()
        if not stripped.startswith(b"{"):
            return Rejection(UNPARSEABLE)
    else:
        if not isinstance(line, str) or not line.lstrip().startswith("{"):
            return Rejection(UNPARSEABLE)
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return Rejection(UNPARSEABLE)
    if not isinstance(record, dict):
        return Rejection(UNPARSEABLE)
    return record


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return ""


def _given(item: dict, key: str, limit: int = 512) -> str:
    """An explicit identity field from the request: a non-empty scalar, redacted, trimmed, bounded."""
    value = item.get(key)
    if value is None:
        return ""
    return redact_text(_text(value).strip()[:limit])


def _redacted(text: str, clean: bool) -> str:
    """`redact_text(text)`, or `text` itself when it was taken from a clean line (`_line_is_clean`)."""
    return text if clean else redact_text(text)


def _process(raw: object, clean: bool = False) -> dict | None:
    """§6.1 process context: known keys in camel or snake case, scalars only, large ids as strings."""
    if not isinstance(raw, dict):
        return None
    out = {}
    for key, name, string_id in _process_plan(tuple(raw)):
        value = raw[key]
        if isinstance(value, str):
            value = _redacted(value, clean)[:512]
        elif isinstance(value, (int, float)):
            if string_id:
                value = _text(value)
        elif value is None or isinstance(value, (dict, list)):
            continue
        out[name] = value
    return out or None


# Objects of one producer share their key sequence: what to do with each key is worked out once per
# sequence. Plain dicts, not lru_cache: a hit is one lookup, and a full cache stops learning.
PLAN_CACHE_LIMIT: Final = 512
_process_plans: dict[tuple, tuple[tuple[object, str, bool], ...]] = {}
_copied_plans: dict[tuple, tuple[str, ...]] = {}


def _process_plan(keys: tuple) -> tuple[tuple[object, str, bool], ...]:
    """(key, canonical name, stored as a string) for each known key of a process object, in order."""
    plan = _process_plans.get(keys)
    if plan is None:
        plan = tuple((key, _PROCESS_KEYS[key], _PROCESS_KEYS[key] in _STRING_IDS) for key in keys if key in _PROCESS_KEYS)
        if len(_process_plans) < PLAN_CACHE_LIMIT:
            _process_plans[keys] = plan
    return plan


def _copied_keys(keys: tuple) -> tuple[str, ...]:
    """The keys of a payload that are copied to attributes (§7.5), in `_COPIED` order."""
    plan = _copied_plans.get(keys)
    if plan is None:
        plan = tuple(key for key in _COPIED if key in keys)
        if len(_copied_plans) < PLAN_CACHE_LIMIT:
            _copied_plans[keys] = plan
    return plan


def _argv_text(inner: dict) -> tuple[str, bool]:
    """argv joined by single spaces, bounded to 1024 items and 32 KiB; the flag says the bound cut it."""
    raw = inner.get("argv")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return "", False
    if len(raw) <= 1024:
        try:
            joined = " ".join(raw)  # the common case: strings only, within the bound
        except TypeError:
            pass
        else:
            if len(joined) <= JUDGE_SUBJECT_LIMIT:
                return joined, False
    argv: list[str] = []
    total, cut = 0, False
    for item in raw:
        text = item if isinstance(item, str) else _text(item)
        if total + len(text) > JUDGE_SUBJECT_LIMIT or len(argv) >= 1024:
            cut = True
            break
        argv.append(text)
        total += len(text) + 1
    return " ".join(argv), cut


def _duration_ms(value: object) -> float:
    if isinstance(value, dict):
        secs, nanos = value.get("secs", 0), value.get("nanos", 0)
        if isinstance(secs, (int, float)) and isinstance(nanos, (int, float)) and not isinstance(secs, bool):
            return float(secs) * 1000.0 + float(nanos) / 1e6
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


_MAX_EXACT: Final = 2.0**53


def _number(value: object) -> float:
    """A finite, non-negative count bounded to what a float holds exactly; anything else is 0."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return 0.0
    if not isinstance(value, (int, float)):
        return 0.0
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        return 0.0
    return max(0.0, min(number, _MAX_EXACT))


_LLM_TARGET_KINDS: Final = frozenset({K.EGRESS, K.DNS})


def _llm_match(endpoints: tuple[str, ...], kind: str, inner: dict) -> str | None:
    """The peer or query an Egress/Dns targets when it is a known LLM endpoint (§7.4)."""
    if kind == K.EGRESS:
        peer = _text(inner.get("peer")).lower()
        sni = _text(inner.get("sni")).lower()
        for e in endpoints:
            if peer == e or (sni and e in sni):
                return _text(inner.get("peer")) or _text(inner.get("sni"))
    elif kind == K.DNS:
        query = _text(inner.get("query")).lower()
        if query and any(e in query for e in endpoints):
            return _text(inner.get("query"))
    return None


def _subjects(kind: str, inner: dict, clean: bool) -> tuple[str, str | None]:
    """(stored redacted subject §7.5, raw L1 subject §6.2 or None when L1 does not judge it); not ToolExec."""
    if kind == K.EGRESS:
        peer = _text(inner.get("peer"))
        port = inner.get("port")
        port_text = _text(port) if isinstance(port, (int, str)) and not isinstance(port, bool) else ""
        stored = f"egress → {peer}:{port_text}" if port_text else f"egress → {peer}"
        return _redacted(stored, clean)[:SUBJECT_LIMIT], f"{peer}:{port_text or 0}"[:JUDGE_SUBJECT_LIMIT]
    if kind == K.DNS:
        query = _text(inner.get("query"))
        return _redacted(f"dns {query}", clean)[:SUBJECT_LIMIT], query[:JUDGE_SUBJECT_LIMIT]
    if kind == K.FILE_ACCESS:
        path = _text(inner.get("path"))
        return _redacted(f"file {path}", clean)[:SUBJECT_LIMIT], path[:JUDGE_SUBJECT_LIMIT]
    if kind == K.FILE_DELETE:
        return _redacted(f"file {_text(inner.get('path'))}", clean)[:SUBJECT_LIMIT], None
    if kind == K.SSL_CONTENT:
        content = inner.get("content")
        return "ssl content", (content if isinstance(content, str) else _text(content))[:JUDGE_SUBJECT_LIMIT]
    if kind == K.SECURITY_ACTION:
        action, detail = _text(inner.get("kind")), _text(inner.get("detail"))
        judged = f"{action} {detail}".strip() if detail else action
        return _redacted(f"security {action}", clean)[:SUBJECT_LIMIT], judged[:JUDGE_SUBJECT_LIMIT]
    if kind == K.LLM_CALL:
        return _redacted(f"llm {_text(inner.get('sni')) or _text(inner.get('peer'))}", clean)[:SUBJECT_LIMIT], None
    return kind, None


def _attributes(kind: str, inner: dict, argv_text: str | None, identity: dict, given: "_Given",
                source: SourceContext | None, clean: bool) -> dict:
    """§7.5 attributes: copied payload keys in `_COPIED` order, argv, observer task and kind, then the
    request's attributes, collector, node and source."""
    limit = given.value_limit
    attrs: dict = {}
    for key in _copied_keys(tuple(inner)):
        value = inner[key]
        if isinstance(value, str):
            attrs[key] = _redacted(value, clean)[:limit]
        elif type(value) is int and _INT_MIN <= value < _INT_END:
            attrs[key] = value
        elif value is not None:
            cleaned = clean_value(value, limit)
            if cleaned is not None:
                attrs[key] = cleaned
    if argv_text is not None:
        attrs["argv"] = argv_text[:300]
    task = identity.get("task")
    if task is not None and not isinstance(task, (dict, list)):
        attrs["observerTask"] = _redacted(_text(task)[:240], clean)
    attrs["observerKind"] = kind
    extra = given.attributes
    if isinstance(extra, dict) and extra:
        attrs.update(sanitize_attributes(extra, max_keys=max(0, 120 - len(attrs)), max_value=limit))
    collector = given.collectorId or (source.collectorId if source else "")
    if collector:
        attrs["collectorId"] = collector
    if given.nodeName:
        attrs["collectorNode"] = given.nodeName
    if source and source.sourceId:
        attrs["sourceId"] = source.sourceId
    return attrs


@dataclass(slots=True)
class _Given:
    """The explicit request fields of an /ingest item (§8.1), read once: strings redacted and bounded
    (empty when absent), the rest raw. `_NOTHING_GIVEN` stands for an item with none of them."""

    source: str = ""
    agentId: str = ""
    workspacePath: str = ""
    sessionId: str = ""
    runId: str = ""
    userId: str = ""
    subject: str = ""
    sourceEventId: str = ""
    traceId: str = ""
    spanId: str = ""
    parentSpanId: str = ""
    taskId: str = ""
    rawPreview: str = ""
    collectorId: str = ""
    nodeName: str = ""
    eventKind: str = ""
    eventCategory: str = ""
    at: Any = None
    tokenCount: Any = None
    latencyMs: Any = None
    attributes: Any = None
    process: Any = None
    attribution: dict | None = None
    value_limit: int = 240

    @classmethod
    def of(cls, item: dict) -> "_Given":
        if len(item) == 1:  # `line` alone: the common case
            return _NOTHING_GIVEN
        present: list = []  # the given fields, each followed by its value
        texts_only = True
        for key, value in item.items():
            if key in _GIVEN_KEYS:
                present.append(key)
                present.append(value)
                texts_only = texts_only and type(value) is str and key in _GIVEN_TEXT_KEYS
        if not present:
            return _NOTHING_GIVEN
        if not texts_only:
            return cls._read(item, present[::2])
        # Only text fields, such as the `collectorId` a collector puts on each of its items: the
        # items of a producer repeat them, so each distinct set is read (and redacted) once.
        # Never changed after `of`, a _Given can be shared.
        cache_key = tuple(present)
        cached = _given_cache.get(cache_key)
        if cached is None:
            cached = cls._read(item, present[::2])
            if len(_given_cache) >= GIVEN_CACHE_LIMIT:
                _given_cache.clear()
            _given_cache[cache_key] = cached
        return cached

    @classmethod
    def _read(cls, item: dict, present: list) -> "_Given":
        given = cls()
        for key in present:  # only the fields present: most items carry one or two
            limit = _GIVEN_TEXT_LIMITS.get(key)
            if limit is not None:
                setattr(given, key, _given(item, key, limit))
            elif key == "eventKind":
                given.eventKind = K.canonical_kind(item.get("eventKind"))
            elif key == "eventCategory":
                given.eventCategory = _text(item.get("eventCategory")).strip().lower()
            elif key == "attribution":
                attribution = item.get("attribution")
                cleaned = _clean_tree(attribution) if isinstance(attribution, dict) else None
                given.attribution = cleaned if isinstance(cleaned, dict) else None
            elif key == "attributeValueLimit":
                # OTLP attribute values may be longer (§5.3); the OTLP parser asks for it on its items
                given.value_limit = 500 if item.get("attributeValueLimit") == 500 else 240
            else:  # at, tokenCount, latencyMs, attributes, process: taken raw, checked where used
                setattr(given, key, item.get(key))
        return given


# the explicit string fields of an item and their length bounds
_GIVEN_TEXT_LIMITS: Final = {
    "source": 512, "agentId": 512, "workspacePath": 1024, "sessionId": 512, "runId": 512, "userId": 512,
    "subject": 2000, "sourceEventId": 256, "traceId": 256, "spanId": 256, "parentSpanId": 256, "taskId": 256,
    "rawPreview": 4000, "collectorId": 512, "nodeName": 512,
}
_GIVEN_TEXT_KEYS: Final = frozenset(_GIVEN_TEXT_LIMITS)
_NOTHING_GIVEN: Final = _Given()
GIVEN_CACHE_LIMIT: Final = 512
_given_cache: dict[tuple, _Given] = {}
_GIVEN_KEYS: Final = frozenset(f.name for f in fields(_Given) if f.name != "value_limit") | {"attributeValueLimit"}


def _line_is_clean(line: str) -> bool:
    """No string decoded from this NDJSON text, nor one composed of them here, can need redaction.

    Without a `\\u` escape each letter of a decoded string is a literal letter of the line (the other
    escapes decode to non-letters), so a marker word in it is a marker word of the line; argv and the
    subjects join such strings with spaces or after fixed prefixes, which cannot complete one either."""
    no_escape = "\\" not in line or "\\u" not in line  # a backslash is rare and quick to look for
    return no_escape and not has_marker(line)


_trace_ids: dict[tuple[str, str, str], str] = {}
TRACE_CACHE_LIMIT: Final = 4096


def _trace_id(workspace: str, agent_id: str, session_id: str) -> str:
    """One trace per workspace, agent and session (§4.2): far fewer than events, so cached."""
    key = (workspace, agent_id, session_id)
    trace = _trace_ids.get(key)
    if trace is None:
        trace = hash_id("tr", [workspace, agent_id, session_id])
        if len(_trace_ids) >= TRACE_CACHE_LIMIT:
            _trace_ids.clear()
        _trace_ids[key] = trace
    return trace


def heartbeat_payload(inner: dict, item: dict) -> dict:
    """A raw `CollectorHeartbeat` line mapped onto the /collectors/heartbeat body (§23.1)."""
    counters = {"exec": K.TOOL_EXEC, "exit": K.PROCESS_EXIT, "egress": K.EGRESS, "dns": K.DNS,
                "file": K.FILE_ACCESS, "llm": K.LLM_CALL, "ssl": K.SSL_CONTENT, "sec": K.SECURITY_ACTION}
    kind_counts: dict[str, float] = {}
    for short, kind in counters.items():
        value = inner.get(short)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            kind_counts[kind] = value
    for key in ("eventKindCounts", "event_kind_counts"):
        given = inner.get(key)
        if isinstance(given, dict):
            kind_counts.update({str(k): v for k, v in given.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})

    def num(*keys: str) -> int | float:
        for key in keys:
            value = inner.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
        return 0

    collector = (_text(inner.get("collector_id")) or _given(item, "collectorId") or _text(inner.get("pod_name"))
                 or _text(inner.get("node_name")) or _given(item, "nodeName") or "unknown-collector")
    features = inner.get("enabled_features")
    return {
        "collectorId": collector[:160],
        "nodeName": _text(inner.get("node_name")) or _given(item, "nodeName"),
        "namespace": _text(inner.get("namespace")),
        "podName": _text(inner.get("pod_name")),
        "version": _text(inner.get("version")),
        "mode": _text(inner.get("mode")),
        "status": _text(inner.get("status")) or "ok",
        "attachedProbes": num("attached_probes"),
        "enabledFeatures": [str(f)[:80] for f in features[:32]] if isinstance(features, list) else [],
        "intervalSecs": num("interval_secs"),
        "observedAgents": num("observed_agents"),
        "eventKindCounts": kind_counts,
        "droppedEvents": num("dropped"),
        "outputDropped": num("output_dropped"),
        "errorCount": num("error_count", "exec_incomplete"),
        "execTruncated": num("exec_truncated"),
        "execReassemblyTimeout": num("exec_reassembly_timeout"),
        "message": redact_text(_text(inner.get("message")))[:500],
    }


def normalize(
    item: object,
    *,
    source: SourceContext | None = None,
    default_source: str = "observer",
    settings: NormalizeSettings | None = None,
    now: Any = None,  # epoch ms (int or float), as given
    workload: Any = None,  # key → events.workloads.WorkloadIdentity | None: Kubernetes pod identity (§7.6)
) -> Observation | Heartbeat | Rejection:
    """One /ingest item (§8.1 body: `line` plus explicit overrides) → a redacted canonical event.

    `line` may be the NDJSON text or an already-parsed record (API parsers pass their synthesised
    record and its text in `lineText`). Never raises on producer input. A bare `{line}` item (the
    common case) skips the override lookups, and the strings of a line without any redaction marker
    are stored without redacting each of them. An observer event whose sessionId or agentId names a
    pod `workload` knows, and that carries no classification of its own, takes that workload's
    identity as if the item had given it, so its ids derive from it."""
    if not isinstance(item, dict):
        return Rejection("invalid batch item")
    line = item.get("line")
    if isinstance(line, dict):
        record = line
        text = item.get("lineText")
        try:
            line_text = text if isinstance(text, str) else orjson.dumps(_clean_tree(record)).decode()
        except (TypeError, orjson.JSONEncodeError):
            return Rejection(UNPARSEABLE)
    elif isinstance(line, str):
        parsed = parse_line(line)
        if isinstance(parsed, Rejection):
            return parsed
        record, line_text = parsed, line
    else:
        return Rejection("missing observer line" if line is None else UNPARSEABLE)

    payload = record.get("event")
    if isinstance(payload, str):  # unit variants serialise as a bare string
        payload = {payload: {}}
    if not isinstance(payload, dict) or not payload:
        return Rejection(UNPARSEABLE)
    line_kind = next(iter(payload))
    inner = payload[line_kind]
    if inner is None:
        inner = {}
    if not isinstance(line_kind, str) or not isinstance(inner, dict) or not line_kind.strip():
        return Rejection(UNPARSEABLE)
    if line_kind == K.COLLECTOR_HEARTBEAT:
        return Heartbeat(heartbeat_payload(inner, item))
    given = _Given.of(item)
    event_source = given.source or default_source
    if event_source not in EVENT_SOURCES:
        event_source = default_source
    if line_kind not in K.RECORDED_KINDS:
        if event_source == "observer":
            return Rejection(UNPARSEABLE)
        line_kind = redact_text(line_kind.strip())[:KIND_LIMIT]
    # strings taken from a clean line are stored as they are: redacting them would change nothing
    clean = isinstance(line, str) and _line_is_clean(line)

    settings = settings or default_settings()
    identity = record.get("identity")
    if not isinstance(identity, dict):
        identity = {}
    id_agent = _redacted(_text(identity.get("agent")).strip()[:512], clean)
    id_session = _redacted(_text(identity.get("session")).strip()[:512], clean)
    id_task = _redacted(_text(identity.get("task")).strip()[:256], clean)
    task_session = f"task-{id_task}" if id_task else ""

    agent_id = given.agentId or id_agent or "unknown"
    session_id = given.sessionId or id_session or id_agent or task_session or "session"
    if workload is not None and event_source == "observer" and not (given.attribution and given.attribution.get("classification")):
        pod = workload(session_id) or workload(agent_id)
        if pod is not None:
            given = _Given.of({**item, **pod.overrides()})
            agent_id = given.agentId or id_agent or "unknown"
            session_id = given.sessionId or id_session or id_agent or task_session or "session"
    workspace = (given.workspacePath or _redacted(_text(inner.get("cwd")).strip()[:1024], clean)
                 or (source.workspacePath if source else "") or f"agent://{agent_id}")
    run_id = given.runId or id_session or id_agent or task_session or session_id
    uid = inner.get("uid")
    uid_text = _text(uid) if uid is not None else ""
    user_id = given.userId or (f"uid:{uid_text}" if uid_text else "system")

    argv_cut, argv_text = False, None
    judge_subject: str | None
    if line_kind == K.TOOL_EXEC:
        judge_subject, argv_cut = _argv_text(inner)
        argv_text = _redacted(judge_subject, clean)
        subject = argv_text[:80] or "exec"
    else:
        subject, judge_subject = _subjects(line_kind, inner, clean)
    stored_kind = line_kind
    llm_target = None
    if line_kind in _LLM_TARGET_KINDS:
        llm_target = _llm_match(settings.llm_endpoints, line_kind, inner)
    if llm_target is not None:
        stored_kind, subject = K.LLM_CALL, _redacted(f"LLM call → {llm_target}", clean)
    if given.eventKind:
        explicit_kind = given.eventKind
        stored_kind = explicit_kind if explicit_kind in K.CATEGORY_BY_KIND else redact_text(explicit_kind)[:KIND_LIMIT]
    if given.subject:
        subject = redact_text(given.subject)[:240]

    at = now if now is not None else now_ms()
    if given.at is not None:
        at = parse_time(given.at, at)
    source_id = source.sourceId if source else ""
    # eventId and spanId hash the same parts (§4.2), all strings but `at`: one digest serves both
    line_hash = sha1_hex(f"{part_text(at)}\0{stored_kind}\0{agent_id}\0{session_id}\0{line_text}\0")
    source_event_id = given.sourceEventId
    event_id = hash_id("evt", [source_id, source_event_id]) if source_event_id else f"evt_{line_hash}"
    trace_id = given.traceId or _trace_id(workspace, agent_id, session_id)
    span_id = given.spanId or f"sp_{line_hash}"

    token_count = 0.0
    if line_kind == K.LLM_API:
        token_count = _number(inner.get("prompt_tokens")) + _number(inner.get("completion_tokens"))
    latency = _duration_ms(inner.get("latency")) if line_kind == K.LLM_CALL else 0.0
    if given.tokenCount is not None:
        token_count = _number(given.tokenCount)
    if given.latencyMs is not None:
        latency = _number(given.latencyMs)

    category = given.eventCategory if given.eventCategory in K.CATEGORIES else K.category_of(stored_kind)
    attributes = _attributes(line_kind, inner, argv_text, identity, given, source, clean)
    if llm_target is not None:
        attributes["observerKind"] = line_kind
    process = _process(given.process) or _process(record.get("process"), clean)
    attribution = given.attribution
    classification = (_text(attribution.get("classification")) if attribution else "") or "unknown"
    if given.rawPreview:
        preview = redact_text(given.rawPreview)[:RAW_PREVIEW_LIMIT]
    else:
        preview = line_text[:RAW_PREVIEW_LIMIT] if clean else redact_head(line_text, RAW_PREVIEW_LIMIT)

    # every field positionally, in declaration order: keywords cost ~0.4 µs more per event (CPython
    # matches each keyword against the 40 parameter names)
    event = AgentEvent(
        event_id, at, stored_kind, category, event_source, subject, workspace, agent_id, session_id, user_id,
        trace_id, span_id, run_id, SCHEMA_VERSION, source_event_id, attributes.get("collectorId", ""), source_id,
        given.parentSpanId, given.taskId or id_task,
        "succeeded", "", "", at,  # decisionStatus, evaluationId, policyVersion, decisionUpdatedAt
        "allow", "Rules", "info", "", "", "", "benign", "Benign", "", 0.0,  # the L1 default, until judged
        max(0, int(token_count)), max(0.0, latency), attributes, process, attribution, None, preview,
    )
    incomplete = line_kind == K.TOOL_EXEC and (
        argv_cut or inner.get("argv_truncated") is True or inner.get("argv_incomplete") is True
    )
    return Observation(event, line_kind, judge_subject, incomplete, classification)


def _clean_tree(value: object, depth: int = 0) -> object:
    """Producer-supplied nested objects (attribution): bounded, key- and value-redacted."""
    if isinstance(value, dict):
        if depth > 4:
            return None
        return {str(k)[:80]: (REDACTED if is_sensitive_key(str(k)) else _clean_tree(v, depth + 1))
                for k, v in list(value.items())[:60]}
    if isinstance(value, list):
        return [_clean_tree(v, depth + 1) for v in value[:40]] if depth <= 4 else None
    if isinstance(value, str):
        return redact_text(value)[:500]
    if isinstance(value, float) and value != value:
        return None
    return value
