"""Observer NDJSON lines (SPEC §6) and the /ingest item body (§8.1) → canonical events (§7).

Every producer format ends here: API formats synthesise an observer line (§8.3.6) and pass the same
item shape, so identity, ids, subjects, attributes and redaction are derived in exactly one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

import orjson

from anysentry.events import kinds as K
from anysentry.events.ids import hash_id
from anysentry.events.model import AgentEvent, Heartbeat, Observation, Rejection, SourceContext
from anysentry.events.redact import REDACTED, clean_value, is_sensitive_key, redact_text, sanitize_attributes
from anysentry.events.timefmt import now_ms, parse_time

UNPARSEABLE = "unparseable event"
RAW_PREVIEW_LIMIT = 1800
JUDGE_SUBJECT_LIMIT = 32 * 1024
SUBJECT_LIMIT = 240
KIND_LIMIT = 128
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
_COPIED = (
    "pid", "ppid", "uid", "cwd", "comm", "exe", "cgroup", "systemdUnit", "hostId", "eventTimeNs", "startTimeNs",
    "peer", "port", "query", "path", "sni", "kind", "prompt_tokens", "completion_tokens", "argv_truncated",
    "argv_incomplete", "exec_confirmed", "argv_source", "captured_argc", "captured_bytes", "observed_argc",
    "observed_bytes", "model", "detail", "write", "exit_code", "signal",
)
_PROCESS_KEYS = {
    "pid": "pid", "ppid": "ppid", "uid": "uid", "comm": "comm", "exe": "exe", "cwd": "cwd", "cgroup": "cgroup",
    "cgroupId": "cgroupId", "cgroup_id": "cgroupId", "systemdUnit": "systemdUnit", "systemd_unit": "systemdUnit",
    "hostId": "hostId", "host_id": "hostId", "bootId": "bootId", "boot_id": "bootId",
    "eventTimeNs": "eventTimeNs", "event_time_ns": "eventTimeNs", "startTimeNs": "startTimeNs",
    "start_time_ns": "startTimeNs", "startTimeTicks": "startTimeTicks", "start_time_ticks": "startTimeTicks",
    "mountNamespace": "mountNamespace", "mount_namespace": "mountNamespace",
}
_STRING_IDS = frozenset({"cgroupId", "startTimeTicks", "eventTimeNs", "startTimeNs"})


def parse_line(line: str | bytes) -> dict | Rejection:
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
    if value is None:
        return ""
    if isinstance(value, str):
        return value
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


def _process(raw: object) -> dict | None:
    if not isinstance(raw, dict):
        return None
    out = {}
    for key, value in raw.items():
        name = _PROCESS_KEYS.get(key)
        if name is None or value is None or isinstance(value, (dict, list)):
            continue
        if name in _STRING_IDS and isinstance(value, (int, float)):
            value = _text(value)
        elif isinstance(value, str):
            value = redact_text(value)[:512]
        out[name] = value
    return out or None


def _argv(inner: dict) -> tuple[list[str], bool]:
    """argv as strings, bounded to 32 KiB; the flag says the bound cut it."""
    raw = inner.get("argv")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return [], False
    argv, total, cut = [], 0, False
    for item in raw:
        text = item if isinstance(item, str) else _text(item)
        if total + len(text) > JUDGE_SUBJECT_LIMIT or len(argv) >= 1024:
            cut = True
            break
        argv.append(text)
        total += len(text) + 1
    return argv, cut


def _duration_ms(value: object) -> float:
    if isinstance(value, dict):
        secs, nanos = value.get("secs", 0), value.get("nanos", 0)
        if isinstance(secs, (int, float)) and isinstance(nanos, (int, float)) and not isinstance(secs, bool):
            return float(secs) * 1000.0 + float(nanos) / 1e6
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


_MAX_EXACT = 2.0**53


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


def _subjects(kind: str, inner: dict, argv: list[str]) -> tuple[str, str | None]:
    """(stored redacted subject §7.5, raw L1 subject §6.2 or None when L1 does not judge it)."""
    if kind == K.TOOL_EXEC:
        joined = " ".join(argv)
        return (redact_text(joined)[:80] or "exec"), joined
    if kind == K.EGRESS:
        peer = _text(inner.get("peer"))
        port = inner.get("port")
        port_text = _text(port) if isinstance(port, (int, str)) and not isinstance(port, bool) and _text(port) else ""
        stored = f"egress → {peer}" + (f":{port_text}" if port_text else "")
        return redact_text(stored)[:SUBJECT_LIMIT], f"{peer}:{port_text or 0}"[:JUDGE_SUBJECT_LIMIT]
    if kind == K.DNS:
        query = _text(inner.get("query"))
        return redact_text(f"dns {query}")[:SUBJECT_LIMIT], query[:JUDGE_SUBJECT_LIMIT]
    if kind == K.FILE_ACCESS:
        path = _text(inner.get("path"))
        return redact_text(f"file {path}")[:SUBJECT_LIMIT], path[:JUDGE_SUBJECT_LIMIT]
    if kind == K.FILE_DELETE:
        return redact_text(f"file {_text(inner.get('path'))}")[:SUBJECT_LIMIT], None
    if kind == K.SSL_CONTENT:
        content = inner.get("content")
        return "ssl content", (content if isinstance(content, str) else _text(content))[:JUDGE_SUBJECT_LIMIT]
    if kind == K.SECURITY_ACTION:
        action, detail = _text(inner.get("kind")), _text(inner.get("detail"))
        judged = f"{action} {detail}".strip() if detail else action
        return redact_text(f"security {action}")[:SUBJECT_LIMIT], judged[:JUDGE_SUBJECT_LIMIT]
    if kind == K.LLM_CALL:
        return redact_text(f"llm {_text(inner.get('sni')) or _text(inner.get('peer'))}")[:SUBJECT_LIMIT], None
    return kind, None


def _attributes(kind: str, inner: dict, argv: list[str], identity: dict, item: dict, source: SourceContext | None) -> dict:
    # OTLP attribute values may be longer (§5.3); the OTLP parser asks for it on its items
    value_limit = 500 if item.get("attributeValueLimit") == 500 else 240
    attrs: dict = {}
    for key in _COPIED:
        value = inner.get(key)
        if value is None:
            continue
        if is_sensitive_key(key) and key != "kind":
            attrs[key] = REDACTED
            continue
        cleaned = clean_value(value, value_limit)
        if cleaned is not None:
            attrs[key] = cleaned
    if kind == K.TOOL_EXEC:
        attrs["argv"] = redact_text(" ".join(argv))[:300]
    task = identity.get("task")
    if task is not None and not isinstance(task, (dict, list)):
        attrs["observerTask"] = redact_text(_text(task)[:240])
    attrs["observerKind"] = kind
    extra = item.get("attributes")
    if isinstance(extra, dict) and extra:
        attrs.update(sanitize_attributes(extra, max_keys=max(0, 120 - len(attrs)), max_value=value_limit))
    collector = _given(item, "collectorId") or (source.collectorId if source else "")
    if collector:
        attrs["collectorId"] = collector
    node = _given(item, "nodeName")
    if node:
        attrs["collectorNode"] = node
    if source and source.sourceId:
        attrs["sourceId"] = source.sourceId
    return attrs


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

    def num(*keys: str) -> float:
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
    item: dict,
    *,
    source: SourceContext | None = None,
    default_source: str = "observer",
    settings: NormalizeSettings | None = None,
    now: int | None = None,
) -> Observation | Heartbeat | Rejection:
    """One /ingest item (§8.1 body: `line` plus explicit overrides) → a redacted canonical event.

    `line` may be the NDJSON text or an already-parsed record (API parsers pass their synthesised
    record and its text in `lineText`). Never raises on producer input."""
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
    event_source = _given(item, "source") or default_source
    if event_source not in ("observer", "synthetic", "api"):
        event_source = default_source
    if line_kind not in K.RECORDED_KINDS:
        if event_source == "observer":
            return Rejection(UNPARSEABLE)
        line_kind = redact_text(line_kind.strip())[:KIND_LIMIT]

    settings = settings or default_settings()
    identity = record.get("identity")
    if not isinstance(identity, dict):
        identity = {}
    id_agent = redact_text(_text(identity.get("agent")).strip()[:512])
    id_session = redact_text(_text(identity.get("session")).strip()[:512])
    id_task = redact_text(_text(identity.get("task")).strip()[:256])

    agent_id = _given(item, "agentId") or id_agent or "unknown"
    workspace = _given(item, "workspacePath", 1024) or redact_text(_text(inner.get("cwd")).strip()[:1024]) or (source.workspacePath if source else "") or f"agent://{agent_id}"
    session_id = _given(item, "sessionId") or id_session or id_agent or (f"task-{id_task}" if id_task else "session")
    run_id = _given(item, "runId") or id_session or id_agent or (f"task-{id_task}" if id_task else "") or session_id
    uid = inner.get("uid")
    user_id = _given(item, "userId") or (f"uid:{_text(uid)}" if uid is not None and _text(uid) else "system")

    argv, argv_cut = _argv(inner) if line_kind == K.TOOL_EXEC else ([], False)
    subject, judge_subject = _subjects(line_kind, inner, argv)
    stored_kind = line_kind
    llm_target = _llm_match(settings.llm_endpoints, line_kind, inner)
    if llm_target is not None:
        stored_kind, subject = K.LLM_CALL, redact_text(f"LLM call → {llm_target}")
    explicit_kind = K.canonical_kind(item.get("eventKind"))
    if explicit_kind:
        stored_kind = explicit_kind if explicit_kind in K.CATEGORY_BY_KIND else redact_text(explicit_kind)[:KIND_LIMIT]
    explicit_subject = _given(item, "subject", 2000)
    if explicit_subject:
        subject = redact_text(explicit_subject)[:240]

    at = parse_time(item.get("at"), now if now is not None else now_ms()) if item.get("at") is not None else (now if now is not None else now_ms())
    source_id = source.sourceId if source else ""
    source_event_id = _given(item, "sourceEventId", 256)
    event_id = hash_id("evt", [source_id, source_event_id]) if source_event_id else hash_id("evt", [at, stored_kind, agent_id, session_id, line_text])
    trace_id = _given(item, "traceId", 256) or hash_id("tr", [workspace, agent_id, session_id])
    span_id = _given(item, "spanId", 256) or hash_id("sp", [at, stored_kind, agent_id, session_id, line_text])

    token_count = 0.0
    if line_kind == K.LLM_API:
        token_count = _number(inner.get("prompt_tokens")) + _number(inner.get("completion_tokens"))
    latency = _duration_ms(inner.get("latency")) if line_kind == K.LLM_CALL else 0.0
    if item.get("tokenCount") is not None:
        token_count = _number(item.get("tokenCount"))
    if item.get("latencyMs") is not None:
        latency = _number(item.get("latencyMs"))

    category = _text(item.get("eventCategory")).strip().lower()
    if category not in K.CATEGORIES:
        category = K.category_of(stored_kind)

    attributes = _attributes(line_kind, inner, argv, identity, item, source)
    if llm_target is not None:
        attributes["observerKind"] = line_kind
    process = _process(item.get("process")) or _process(record.get("process"))
    attribution = item.get("attribution") if isinstance(item.get("attribution"), dict) else None
    if attribution is not None:
        attribution = _clean_tree(attribution)
    classification = _text((attribution or {}).get("classification")) or "unknown"
    preview = _given(item, "rawPreview", 4000)

    event = AgentEvent(
        eventId=event_id,
        at=at,
        eventKind=stored_kind,
        eventCategory=category,
        source=event_source,
        subject=subject,
        workspacePath=workspace,
        agentId=agent_id,
        sessionId=session_id,
        userId=user_id,
        traceId=trace_id,
        spanId=span_id,
        runId=run_id,
        sourceEventId=source_event_id,
        collectorId=attributes.get("collectorId", ""),
        sourceId=source_id,
        parentSpanId=_given(item, "parentSpanId", 256),
        taskId=_given(item, "taskId", 256) or id_task,
        decisionUpdatedAt=at,
        tokenCount=max(0, int(token_count)),
        latencyMs=max(0.0, latency),
        attributes=attributes,
        process=process,
        attribution=attribution,
        rawPreview=redact_text(preview or line_text)[:RAW_PREVIEW_LIMIT],
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
