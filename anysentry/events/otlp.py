"""OTLP/HTTP JSON → /ingest items (SPEC §8.5): `POST /ingest/otel`, `/ingest/otlp/v1/logs`,
`/ingest/otlp/v1/traces`; each accepts `resourceLogs` and `resourceSpans`.

Reads the OTLP JSON encoding (lowerCamelCase, trace/span ids hex, enums as numbers) and also what
protobuf's generic JSON mapping emits (`MessageToJson`: ids base64, 64-bit ints and enums as
strings) and snake_case field names. Log records and spans each become one API event dict that
`synthesize.event_item` turns into an item; `observer.normalize` does the rest.

Attributes: `[{key, value: AnyValue}]`, at most 200 read per list; `stringValue`, `intValue` (string
or number), `doubleValue` (number or string), `boolValue`, `bytesValue` (kept as its base64 text),
`arrayValue` / `kvlistValue` (→ compact JSON text, nested sensitive keys redacted); keys are
key-redacted (§5.2), strings value-redacted and cut to 500 chars; JSON-looking strings (tool
arguments, message lists) are redacted key-aware after parsing.

Identity (record attributes first, then the resource, §8.5 chains):
- agentId: `anysentry.agent.id` → `agent.id` → `gen_ai.agent.id` → `service.name` → `k8s.pod.name`
  → `process.executable.name` → `gen_ai.agent.name`; SDK placeholders `unknown_service*` do not count.
- workspacePath: `anysentry.workspace`, else `<namespace>/<service>`, else `workspace://<namespace>`,
  else `service://<service>` (namespace: `service.namespace` | `k8s.namespace.name` |
  `deployment.environment.name`).
- sessionId: `anysentry.session.id` | `session.id` | `gen_ai.conversation.id` | `mcp.session.id`
  (record), `service.instance.id` | `k8s.pod.uid` (resource); userId `enduser.id` | `user.id` |
  `user.name`; collectorId `anysentry.collector.id` | `collector.id` | `host.name`;
  nodeName `k8s.node.name`; request sourceName = the first `service.name`, sourceType `otel`.

Kind, in this order:
1. `anysentry.event.kind` (alias-normalised, kept verbatim when unknown);
2. `event.kind` / `event.name` / the log record's `eventName` when it names one of our kinds;
3. the GenAI / MCP semantic conventions — current names and the deprecated ones still emitted by
   OpenLLMetry/LangChain (`gen_ai.system`, `gen_ai.usage.prompt_tokens`, `llm.*`) and OpenInference:
   `gen_ai.operation.name = execute_tool`, `mcp.method.name = tools/call`,
   `traceloop.span.kind = tool`, `openinference.span.kind = TOOL` → ToolExec with argv = the tool
   name (`gen_ai.tool.name` | `mcp.tool.name` | the span name) followed by the arguments
   (`gen_ai.tool.call.arguments`): the leaf values of a JSON object/array in order, so L1 judges
   `terminal curl … | sh` rather than `{"commands": ["curl … | sh"]}`, other text as one item (the
   arguments JSON itself stays in the attributes); `chat` / `text_completion` / `generate_content` / `embeddings`
   (or `llm.request.type`, OpenInference `LLM`/`EMBEDDING`) with a provider or model → LlmApi with
   model, token counts and endpoint; any other operation or MCP method (`invoke_agent`,
   `create_agent`, `tools/list`, `initialize`, …) → RuntimeEvent `gen_ai.<op>` / `mcp.<method>`
   (recorded, not judged, and without tokenCount: an agent span's usage aggregates its chat spans,
   counting it again would double the token totals);
4. an unrecognised `event.kind` / `event.name`, verbatim (category `unknown`);
5. §8.5 inference: command → ToolExec, `file.path` → FileAccess, `dns.question.name` → Dns,
   provider/model → LlmApi, endpoint → Egress, content or subject → SslContent.
Step 3 before 4 is a deliberate reading of §8.5: a GenAI event such as
`gen_ai.client.inference.operation.details` is an LLM call, not a kind of its own.

Per record: command `anysentry.command` | `process.command_line` | `process.command_args` (array) |
`process.command` | `command` | `tool.command` | `db.statement` | `db.query.text`; endpoint
`anysentry.endpoint` | `server.address` | `net.peer.name` | `network.peer.address` | `peer.service` |
`url.full` | `http.url` | `rpc.service` | `gen_ai.system` | `gen_ai.provider.name` | `llm.provider`;
port `server.port` | `net.peer.port` | `network.peer.port`; log `body` → attribute
`log.record.body`, the subject and the judged content; span `name` → subject; time `timeUnixNano` |
`observedTimeUnixNano` | `startTimeUnixNano` (> 1e13 → ns); span latencyMs = end − start; token
counts from `gen_ai.usage.*` / `llm.usage.*` / `llm.token_count.*`; traceId/spanId/parentSpanId
from the record (hex kept, base64 decoded to hex, anything else dropped); a span's source event id
is `otel:<traceId>:<spanId>` (a re-export upserts), a log's is `log.record.uid` when present.

A body that is not JSON, not an object, or whose `resourceLogs`/`resourceSpans` is not an array
raises `BodyError`; a malformed entry deeper down becomes a `Rejection` item; nothing else escapes.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

import orjson

from anysentry.events import kinds as K
from anysentry.events.errors import BodyError
from anysentry.events.producer_body import (
    bounded_int,
    clean_attributes,
    dumps_preview,
    epoch_ms,
    event_defaults,
    redact_json_text,
    redact_tree,
    source_request,
    text,
)
from anysentry.events.model import ParsedBody, Rejection
from anysentry.events.synthesize import ARGV_MAX_ITEM, event_item

MAX_ATTRIBUTES = 200
MAX_RECORDS = 1000
_INTERNAL_MAX = 8192   # raw string values kept for argv/content before the stored cut
_ANY_DEPTH = 8
_NESTED_MAX = 64
_COUNT_MAX = 10**12
_MAX_ARGUMENTS = 127   # argv items taken from tool-call arguments (synthesize keeps <= 128)

_ANY_KEYS = {
    "stringValue": "s", "string_value": "s", "intValue": "i", "int_value": "i",
    "doubleValue": "d", "double_value": "d", "boolValue": "b", "bool_value": "b",
    "arrayValue": "a", "array_value": "a", "kvlistValue": "k", "kvlist_value": "k",
    "bytesValue": "y", "bytes_value": "y",
}
_SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS = ("unset", "ok", "error")
_SEVERITY_BASE = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}

COMMAND_KEYS = ("anysentry.command", "process.command_line", "process.command_args", "process.command", "command",
                "tool.command", "db.statement", "db.query.text")
_TOOL_COMMAND_KEYS = COMMAND_KEYS[:6]
ENDPOINT_KEYS = ("anysentry.endpoint", "server.address", "net.peer.name", "network.peer.address", "peer.service",
                 "url.full", "http.url", "rpc.service", "gen_ai.system", "gen_ai.provider.name", "llm.provider")
PORT_KEYS = ("server.port", "net.peer.port", "network.peer.port")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "llm.vendor")
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.response.model", "llm.request.model",
              "llm.model", "llm.model_name")
PROMPT_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens",
               "llm.token_count.prompt")
COMPLETION_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens",
                   "llm.token_count.completion")
TOTAL_KEYS = ("llm.usage.total_tokens", "gen_ai.usage.total_tokens", "llm.token_count.total")
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"})
TOOL_OPERATIONS = frozenset({"execute_tool"})


# ---------------------------------------------------------------- JSON shapes

def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", camel).lower()


def _f(obj: object, camel: str) -> object:
    """An OTLP field by its JSON (lowerCamelCase) name or its proto (snake_case) name."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(camel)
    return obj.get(_snake(camel)) if value is None else value


def _load(body: object) -> dict:
    if body is None:
        return {}
    if isinstance(body, memoryview):
        body = body.tobytes()
    if isinstance(body, bytearray):
        body = bytes(body)
    if isinstance(body, (bytes, str)):
        if not body.strip():
            return {}
        try:
            body = orjson.loads(body)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise BodyError(f"malformed JSON: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}") from None
    if not isinstance(body, dict):
        raise BodyError("OTLP body must be a JSON object with resourceLogs or resourceSpans")
    return body


def _double(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return float(raw) if abs(raw) < 2**64 else None
    if isinstance(raw, float):
        value = raw
    elif isinstance(raw, str):
        try:
            value = float(raw.strip()[:64])
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def any_value(value: object, depth: int = 0) -> object:
    """One OTLP AnyValue → a Python value (str/int/float/bool/list/dict), or None when empty/invalid."""
    if not isinstance(value, dict) or depth > _ANY_DEPTH:
        return None
    for key, raw in value.items():
        tag = _ANY_KEYS.get(key)
        if tag is None:
            continue
        if tag == "s":
            return raw[:_INTERNAL_MAX] if isinstance(raw, str) else None
        if tag == "i":
            return bounded_int(raw, -(2**63), 2**64 - 1)
        if tag == "d":
            return _double(raw)
        if tag == "b":
            if isinstance(raw, bool):
                return raw
            return {"true": True, "false": False}.get(raw.strip().lower()) if isinstance(raw, str) else None
        if tag == "a":
            values = _f(raw, "values")
            return [any_value(v, depth + 1) for v in values[:_NESTED_MAX]] if isinstance(values, list) else []
        if tag == "k":
            return key_values(_f(raw, "values"), depth + 1, _NESTED_MAX)
        return raw[:1024] if isinstance(raw, str) else None  # bytesValue: its base64 text
    return None


def key_values(entries: object, depth: int = 0, limit: int = MAX_ATTRIBUTES) -> dict:
    """`[{key, value}]` → {key: python value}; at most `limit` entries read, first key wins."""
    out: dict = {}
    if not isinstance(entries, list):
        return out
    for entry in entries[:limit]:
        if not isinstance(entry, dict):
            continue
        key = entry.get("key")
        if not isinstance(key, str) or not key.strip() or key in out:
            continue
        value = any_value(entry.get("value"), depth)
        if value is not None:
            out[key[:256]] = value
    return out


def hex_id(value: object, nbytes: int) -> str | None:
    """A trace (16 bytes) or span (8 bytes) id as lowercase hex: hex kept, base64 decoded; None for
    anything else or the all-zero (invalid) id."""
    if not isinstance(value, str):
        return None
    raw = value.strip()
    if not raw or len(raw) > 64:
        return None
    if len(raw) == nbytes * 2 and re.fullmatch(r"[0-9a-fA-F]+", raw):
        hexed = raw.lower()
    else:
        alt = b"-_" if ("-" in raw or "_" in raw) else None
        try:
            decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=alt, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(decoded) != nbytes:
            return None
        hexed = decoded.hex()
    return None if hexed.strip("0") == "" else hexed


def _nanos(value: object) -> int | float | None:
    if isinstance(value, str):
        return bounded_int(value, 1, 10**22) or _double(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if (not isinstance(value, float) or math.isfinite(value)) and value > 0 else None


def _latency_ms(start: object, end: object) -> float | None:
    s, e = _nanos(start), _nanos(end)
    if s is None or e is None or e < s:
        return None
    if s > 1e13 and e > 1e13:
        latency = (e - s) / 1e6
    else:
        s_ms, e_ms = epoch_ms(s), epoch_ms(e)
        if s_ms is None or e_ms is None:
            return None
        latency = float(e_ms - s_ms)
    return latency if 0 <= latency <= 1e12 else None


def _enum(value: object, names: tuple[str, ...], prefix: str) -> str | None:
    number = bounded_int(value, 0, len(names) - 1)
    if number is not None:
        return names[number]
    if isinstance(value, str) and value.upper().startswith(prefix):
        name = value[len(prefix):].lower()
        return name if name in names else None
    return None


def _severity_number(value: object) -> int | None:
    number = bounded_int(value, 0, 24)
    if number is not None or not isinstance(value, str):
        return number
    match = re.fullmatch(r"SEVERITY_NUMBER_([A-Z]+)([234]?)", value.strip().upper())
    if not match or match.group(1) not in _SEVERITY_BASE:
        return None
    return _SEVERITY_BASE[match.group(1)] + (int(match.group(2)) - 1 if match.group(2) else 0)


# ---------------------------------------------------------------- lookups

def _s(attrs: dict, *keys: str, limit: int = 512) -> str | None:
    for key in keys:
        value = text(attrs.get(key), limit)
        if value is not None:
            return value
    return None


def _lower(attrs: dict, *keys: str) -> str:
    return (_s(attrs, *keys, limit=128) or "").lower()


def _count(attrs: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = attrs.get(key)
        count = bounded_int(value, 0, _COUNT_MAX)
        if count is None and isinstance(value, float) and math.isfinite(value) and 0 <= value <= _COUNT_MAX:
            count = int(value)
        if count is not None:
            return count
    return None


def _service(res: dict) -> str | None:
    service = _s(res, "service.name")
    return None if service is None or service.startswith("unknown_service") else service


def _identity(rec: dict, res: dict) -> dict:
    service = _service(res)
    agent = (
        _s(rec, "anysentry.agent.id") or _s(res, "anysentry.agent.id")
        or _s(rec, "agent.id", "gen_ai.agent.id") or _s(res, "agent.id", "gen_ai.agent.id")
        or service or _s(res, "k8s.pod.name", "process.executable.name") or _s(rec, "gen_ai.agent.name")
    )
    workspace = _s(rec, "anysentry.workspace", limit=1024) or _s(res, "anysentry.workspace", limit=1024)
    if not workspace:
        namespace = _s(res, "service.namespace", "k8s.namespace.name", "deployment.environment.name",
                       "deployment.environment")
        if namespace and service:
            workspace = f"{namespace}/{service}"
        elif namespace:
            workspace = f"workspace://{namespace}"
        elif service:
            workspace = f"service://{service}"
    session = (
        _s(rec, "anysentry.session.id", "session.id", "gen_ai.conversation.id", "mcp.session.id")
        or _s(res, "anysentry.session.id", "session.id", "service.instance.id", "k8s.pod.uid")
    )
    user_keys = ("enduser.id", "user.id", "user.name")
    return {
        "agentId": agent,
        "workspacePath": workspace,
        "sessionId": session,
        "userId": _s(rec, *user_keys) or _s(res, *user_keys),
        "collectorId": _s(res, "anysentry.collector.id", "collector.id", "host.name"),
        "nodeName": _s(res, "k8s.node.name"),
        "pid": bounded_int(rec.get("process.pid", res.get("process.pid")), 0, 2**32 - 1),
    }


def _leaves(value: object, out: list[str]) -> None:
    if len(out) >= _MAX_ARGUMENTS:
        return
    if isinstance(value, dict):
        for item in value.values():
            _leaves(item, out)
    elif isinstance(value, list):
        for item in value:
            _leaves(item, out)
    elif value is not None:
        leaf = value if isinstance(value, str) else text(value, 64)
        if leaf:
            out.append(leaf)


def _argument_argv(value: object) -> list[str]:
    """Tool-call arguments as argv items: the leaf values of a JSON object/array (key-aware
    redacted), so L1 sees `bash -c …` rather than `{"command": "bash -c …"}`; other text as one item."""
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            return []
        if stripped[:1] in ("{", "[") and len(stripped) <= 65536:
            try:
                value = orjson.loads(stripped)
            except (orjson.JSONDecodeError, ValueError):
                return [redact_json_text(stripped, ARGV_MAX_ITEM)]
            if not isinstance(value, (dict, list)):
                return [redact_json_text(stripped, ARGV_MAX_ITEM)]
        else:
            return [redact_json_text(stripped, ARGV_MAX_ITEM)]
    if isinstance(value, (dict, list)):
        out: list[str] = []
        _leaves(redact_tree(value, limit=ARGV_MAX_ITEM), out)
        return out
    leaf = text(value, ARGV_MAX_ITEM)
    return [leaf] if leaf else []


def _tool_event(rec: dict, name: str, op: str, method: str, tl: str, oi: str) -> dict:
    tool = _s(rec, "gen_ai.tool.name", "mcp.tool.name")
    arguments = rec.get("gen_ai.tool.call.arguments")
    if tl == "tool":
        tool = tool or _s(rec, "traceloop.entity.name")
        arguments = arguments if arguments is not None else rec.get("traceloop.entity.input")
    if oi == "tool":
        tool = tool or _s(rec, "tool.name")
        arguments = arguments if arguments is not None else rec.get("tool.parameters", rec.get("input.value"))
    if not tool and name:
        for prefix in (f"{op} ", f"{method} "):
            if prefix.strip() and name.startswith(prefix):
                tool = text(name[len(prefix):], 512)
                break
        tool = tool or text(name, 512)
    event: dict = {"eventKind": K.TOOL_EXEC, "argv": [tool or "unknown", *_argument_argv(arguments)]}
    command = _command(rec, _TOOL_COMMAND_KEYS)
    if command is not None:
        event["command"] = command
    return event


def _command(rec: dict, keys: tuple[str, ...]) -> str | list | None:
    for key in keys:
        value = rec.get(key)
        if isinstance(value, list):
            parts = [p for p in (text(v, ARGV_MAX_ITEM) for v in value) if p]
            if parts:
                return parts
        elif isinstance(value, str) and value.strip():
            return value[:_INTERNAL_MAX]
    return None


def _classify(rec: dict, named: str | None, name: str, has_subject: bool, content: str | None) -> dict:
    """The event kind and its kind-specific fields (see the module doc for the order)."""
    op = _lower(rec, "gen_ai.operation.name")
    method = _lower(rec, "mcp.method.name")
    tl = _lower(rec, "traceloop.span.kind")
    oi = _lower(rec, "openinference.span.kind")
    explicit = _s(rec, "anysentry.event.kind", limit=64)
    given = K.canonical_kind(explicit) if explicit else (K.canonical_kind(named) if named else "")
    if given == K.TOOL_EXEC:
        return _tool_event(rec, name, op, method, tl, oi)
    if explicit:
        event = {"eventKind": given}
        if given == K.SECURITY_ACTION:
            event["kind"] = _s(rec, "anysentry.security.kind", "security.kind", limit=64) or explicit
        elif given == K.RUNTIME_EVENT:
            event["runtimeKind"] = _s(rec, "anysentry.runtime.kind", limit=120) or explicit
        return event
    if given in K.RECORDED_KINDS:
        return {"eventKind": given}

    request_type = _lower(rec, "llm.request.type")
    provider = _s(rec, *PROVIDER_KEYS)
    model = _s(rec, *MODEL_KEYS)
    if op in TOOL_OPERATIONS or method == "tools/call" or tl == "tool" or oi == "tool":
        return _tool_event(rec, name, op, method, tl, oi)
    llm_like = op in LLM_OPERATIONS or oi in ("llm", "embedding") or (not op and request_type in LLM_OPERATIONS | {"rerank"})
    if llm_like and (provider or model):
        return {"eventKind": K.LLM_API}
    if op and not llm_like:
        return {"eventKind": K.RUNTIME_EVENT, "runtimeKind": f"gen_ai.{op}"[:120]}
    if method:
        return {"eventKind": K.RUNTIME_EVENT, "runtimeKind": f"mcp.{method}"[:120]}
    if tl in ("workflow", "task", "agent"):
        return {"eventKind": K.RUNTIME_EVENT, "runtimeKind": f"traceloop.{tl}"}
    if oi in ("agent", "chain", "retriever", "reranker", "guardrail", "evaluator"):
        return {"eventKind": K.RUNTIME_EVENT, "runtimeKind": f"openinference.{oi}"}

    if named:
        return {"eventKind": K.canonical_kind(named)}
    if _command(rec, COMMAND_KEYS) is not None:
        return {"eventKind": K.TOOL_EXEC}
    if _s(rec, "anysentry.path", "file.path"):
        return {"eventKind": K.FILE_ACCESS}
    if _s(rec, "anysentry.query", "dns.question.name"):
        return {"eventKind": K.DNS}
    if provider or model:
        return {"eventKind": K.LLM_API}
    if _s(rec, *ENDPOINT_KEYS):
        return {"eventKind": K.EGRESS}
    if content or has_subject:
        return {"eventKind": K.SSL_CONTENT}
    return {"eventKind": "Event"}


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
