"""OTLP/HTTP JSON → /ingest items (SPEC §8.5): `POST /ingest/otel`, `/ingest/otlp/v1/logs`,
`/ingest/otlp/v1/traces`; each accepts `resourceLogs` and `resourceSpans`.

Walks resources → scopes → log records / spans; each record becomes one API event dict that
`synthesize.event_item` turns into an item; `observer.normalize` does the rest. Decoding the OTLP
JSON encoding (either JSON mapping, AnyValue, ids, enums) lives in `otlp_json`; what the attribute
names mean (identity, kind, tool and LLM fields: the GenAI / MCP conventions) lives in `semconv`.

Attributes are stored with keys key-redacted (§5.2), strings value-redacted and cut to 500 chars,
arrays / kvlists as compact JSON text with nested sensitive keys redacted; JSON-looking strings (tool
arguments, message lists) are redacted key-aware after parsing. Request sourceName = the first
`service.name`, sourceType `otel`.

Per record: command, endpoint, port, token counts by the `semconv` keys; log `body` → attribute
`log.record.body`, the subject and the judged content; span `name` → subject; time `timeUnixNano` |
`observedTimeUnixNano` | `startTimeUnixNano` (> 1e13 → ns); span latencyMs = end − start;
traceId/spanId/parentSpanId from the record (hex kept, base64 decoded to hex, anything else dropped);
a span's source event id is `otel:<traceId>:<spanId>` (a re-export upserts), a log's is
`log.record.uid` when present.

A body that is not JSON, not an object, or whose `resourceLogs`/`resourceSpans` is not an array
raises `BodyError`; a malformed entry deeper down becomes a `Rejection` item; nothing else escapes.
"""

from __future__ import annotations

import orjson

from anysentry.events import kinds as K
from anysentry.events.errors import BodyError
from anysentry.events.model import ParsedBody, Rejection
from anysentry.events.otlp_json import (
    INTERNAL_MAX as _INTERNAL_MAX,
    SPAN_KINDS as _SPAN_KINDS,
    STATUS_CODES as _STATUS,
    any_value,
    enum_name as _enum,
    field as _f,
    hex_id,
    key_values,
    latency_ms as _latency_ms,
    load_body as _load,
    nanos as _nanos,
    severity_number as _severity_number,
)
from anysentry.events.producer_body import (
    bounded_int,
    clean_attributes,
    dumps_preview,
    epoch_ms,
    event_defaults,
    source_request,
    text,
)
from anysentry.events.semconv import (
    COMMAND_KEYS,
    COMPLETION_KEYS,
    ENDPOINT_KEYS,
    MODEL_KEYS,
    PORT_KEYS,
    PROMPT_KEYS,
    PROVIDER_KEYS,
    TOTAL_KEYS,
    classify as _classify,
    first_command as _command,
    first_count as _count,
    first_text as _s,
    identity as _identity,
)
from anysentry.events.synthesize import event_item

# Names importers take from here since before the split.
__all__ = ["COMMAND_KEYS", "ENDPOINT_KEYS", "MODEL_KEYS", "PROMPT_KEYS", "PROVIDER_KEYS", "hex_id", "key_values",
           "parse_otlp_body"]

MAX_RECORDS = 1000


# ---------------------------------------------------------------- records

def _body_texts(body: object) -> tuple[str | None, str | None]:
    """A log body as (raw text for the judge, text to show); a structured body shows key-redacted."""
    value = any_value(body)
    if value is None:
        return None, None
    if isinstance(value, (dict, list)):
        try:
            raw = orjson.dumps(value).decode()[:_INTERNAL_MAX]
        except (TypeError, orjson.JSONEncodeError):
            raw = None
        shown = dumps_preview(value, _INTERNAL_MAX)
        return raw or shown, shown
    shown = value if isinstance(value, str) else text(value, _INTERNAL_MAX)
    return shown, shown


def _raw_text(rec: dict, *keys: str) -> str | None:
    """An unredacted string attribute (judged content); redaction happens before storage."""
    for key in keys:
        value = rec.get(key)
        if isinstance(value, str) and value.strip():
            return value[:_INTERNAL_MAX]
    return None


def _record_event(signal: str, record: dict, res: dict, res_service: str | None, scope: dict) -> dict:
    rec = key_values(_f(record, "attributes"))
    is_span = signal == "span"
    name = text(_f(record, "name"), 1000) if is_span else None
    body_raw, body = (None, None) if is_span else _body_texts(_f(record, "body"))
    subject = name or (body.strip() if body else None) or None
    named = _s(rec, "event.kind", "event.name", limit=64) or (None if is_span else text(_f(record, "eventName"), 64))
    content = _raw_text(rec, "anysentry.content", "content") or body_raw

    event: dict = {k: v for k, v in _identity(rec, res).items() if v is not None}
    event.update(_classify(rec, named, name or "", bool(subject), content))
    kind = event["eventKind"]

    command = _command(rec, COMMAND_KEYS)
    if command is not None and "command" not in event and "argv" not in event:
        event["command"] = command
    for field, keys in (("endpoint", ENDPOINT_KEYS), ("path", ("anysentry.path", "file.path")),
                        ("query", ("anysentry.query", "dns.question.name"))):
        value = _s(rec, *keys, limit=800)
        if value:
            event[field] = value
    port = next((p for p in (bounded_int(rec.get(k), 0, 65535) for k in PORT_KEYS) if p is not None), None)
    if port is not None:
        event["port"] = port
    if content:
        event["content"] = content

    prompt, completion, total = _count(rec, PROMPT_KEYS), _count(rec, COMPLETION_KEYS), _count(rec, TOTAL_KEYS)
    if prompt is not None:
        event["promptTokens"] = prompt
    if completion is not None:
        event["completionTokens"] = completion
    if kind == K.LLM_API and (prompt is not None or completion is not None or total is not None):
        event["tokenCount"] = (prompt or 0) + (completion or 0) if prompt is not None or completion is not None else total

    trace_id = hex_id(_f(record, "traceId"), 16)
    span_id = hex_id(_f(record, "spanId"), 8)
    if trace_id:
        event["traceId"] = trace_id
    if span_id:
        event["spanId"] = span_id
    at = None
    for key in ("timeUnixNano", "observedTimeUnixNano", "startTimeUnixNano"):
        at = epoch_ms(_nanos(_f(record, key)))
        if at is not None:
            break
    if at is not None:
        event["at"] = at
    if subject:
        event["subject"] = subject

    derived: dict = {
        "otel.signal": signal,
        "otel.scope.name": text(_f(scope, "name"), 256),
        "otel.scope.version": text(_f(scope, "version"), 64),
    }
    status = None
    if is_span:
        parent = hex_id(_f(record, "parentSpanId"), 8)
        if parent:
            event["parentSpanId"] = parent
        latency = _latency_ms(_f(record, "startTimeUnixNano"), _f(record, "endTimeUnixNano"))
        if latency is not None:
            event["latencyMs"] = latency
        if trace_id and span_id:
            event["id"] = f"otel:{trace_id}:{span_id}"
        span_status = _f(record, "status")
        status = _enum(_f(span_status, "code"), _STATUS, "STATUS_CODE_")
        derived["otel.span.kind"] = _enum(_f(record, "kind"), _SPAN_KINDS, "SPAN_KIND_")
        derived["otel.status_code"] = status.upper() if status in ("ok", "error") else None
        derived["otel.status_description"] = text(_f(span_status, "message"), 500)
    else:
        severity_text = text(_f(record, "severityText"), 32)
        severity_number = _severity_number(_f(record, "severityNumber"))
        derived["log.severity"] = severity_text
        derived["log.severity_number"] = severity_number
        derived["log.record.body"] = body
        uid = _s(rec, "log.record.uid", limit=128)
        if uid:
            event["id"] = f"otel-log:{uid}"
    explicit_status = _s(rec, "anysentry.status", limit=64)
    if explicit_status or status in ("ok", "error"):
        event["status"] = explicit_status or status
    if kind == K.LLM_API:
        derived["model"] = _s(rec, *MODEL_KEYS)

    attributes = {k: v for k, v in derived.items() if v is not None}
    for source in (rec, res):
        for key, value in source.items():
            attributes.setdefault(key, value)
    event["attributes"] = clean_attributes(attributes)
    preview = {
        "signal": signal,
        "name": name,
        "body": body[:1000] if body else None,
        "traceId": trace_id,
        "spanId": span_id,
        "service": res_service,
        "attributes": rec,
    }
    event["rawPreview"] = dumps_preview({k: v for k, v in preview.items() if v is not None})
    return event


_SIGNALS = (
    ("log", "resourceLogs", ("scopeLogs", "instrumentationLibraryLogs"), ("scope", "instrumentationLibrary"), "logRecords"),
    ("span", "resourceSpans", ("scopeSpans", "instrumentationLibrarySpans"), ("scope", "instrumentationLibrary"), "spans"),
)


def parse_otlp_body(body: object) -> ParsedBody:
    """An OTLP/HTTP JSON export request → request fields and one item per log record / span."""
    doc = _load(body)
    request = source_request(doc, "otel", "")
    given_name = isinstance(doc.get("sourceName"), str) and doc["sourceName"].strip()
    defaults = event_defaults(request)
    items: list = []
    dropped = 0
    first_service: str | None = None

    def reject(reason: str) -> None:
        if len(items) < MAX_RECORDS:
            items.append(Rejection(reason, len(items)))

    for signal, resources_key, scopes_keys, scope_keys, records_key in _SIGNALS:
        resources = _f(doc, resources_key)
        if resources is None:
            continue
        if not isinstance(resources, list):
            raise BodyError(f"{resources_key} must be an array")
        for resource_entry in resources:
            if not isinstance(resource_entry, dict):
                reject(f"invalid OTLP {resources_key} entry: not an object")
                continue
            res = key_values(_f(_f(resource_entry, "resource"), "attributes"))
            res_service = _s(res, "service.name")
            first_service = first_service or res_service
            scopes = next((v for v in (_f(resource_entry, k) for k in scopes_keys) if v is not None), None)
            if scopes is None:
                continue
            if not isinstance(scopes, list):
                reject(f"invalid OTLP {scopes_keys[0]}: not an array")
                continue
            for scope_entry in scopes:
                if not isinstance(scope_entry, dict):
                    reject(f"invalid OTLP {scopes_keys[0]} entry: not an object")
                    continue
                scope = next((v for v in (_f(scope_entry, k) for k in scope_keys) if isinstance(v, dict)), {})
                records = _f(scope_entry, records_key)
                if records is None:
                    continue
                if not isinstance(records, list):
                    reject(f"invalid OTLP {records_key}: not an array")
                    continue
                for record in records:
                    if len(items) >= MAX_RECORDS:
                        dropped += 1
                    elif not isinstance(record, dict):
                        reject(f"invalid OTLP {'span' if signal == 'span' else 'log record'}: not an object")
                    else:
                        item = event_item(_record_event(signal, record, res, res_service, scope), defaults)
                        items.append(Rejection(item.reason, len(items)) if isinstance(item, Rejection) else item)
    if dropped:
        items.append(Rejection(f"too many OTLP records: at most {MAX_RECORDS} per request, {dropped} dropped", len(items)))
    if not given_name:
        request["sourceName"] = first_service or "otel"
    return ParsedBody(request=request, items=items)
