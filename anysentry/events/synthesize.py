"""API event fields (SPEC §8.3.2) → an /ingest item carrying a synthesised observer line (§8.3.6).

So the judge sees one input form, every API format (generic JSON, CloudEvents, OTLP, Falco,
Tetragon) builds a flat event dict and passes it through `event_item`; `observer.normalize` then
derives identity, ids, subjects and attributes exactly as for a node observer line."""

from __future__ import annotations

import shlex

import orjson

from anysentry.events import kinds as K
from anysentry.events.model import Rejection
from anysentry.events.redact import redact_text, sanitize_attributes

ARGV_MAX_ITEMS = 128
ARGV_MAX_ITEM = 8 * 1024
ARGV_MAX_TOTAL = 32 * 1024
ARGV_MAX_STRING = 600
PATH_MAX = 800
CONTENT_MAX = 1000

# item fields passed straight to the normaliser as explicit overrides
_OVERRIDES = (
    "workspacePath", "agentId", "sessionId", "userId", "traceId", "spanId", "parentSpanId", "runId", "taskId",
    "collectorId", "nodeName", "eventCategory", "subject", "rawPreview", "tokenCount", "latencyMs", "attribution",
    "process",
)
# request-level fields that fill every event lacking them (§8.3.1)
DEFAULTABLE = (
    "collectorId", "nodeName", "workspacePath", "agentId", "sessionId", "userId", "traceId", "runId", "taskId",
)
SOURCE_KEYS = ("sourceId", "sourceName", "sourceType", "token")


def _scalar(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _first(event: dict, *keys: str) -> object:
    for key in keys:
        value = event.get(key)
        if value is not None and value != "":
            return value
    return None


def raw_kind(event: dict) -> object:
    attrs = event.get("attributes") if isinstance(event.get("attributes"), dict) else {}
    return _first(event, "eventKind", "kind") or _first(attrs, "eventKind", "kind")


def infer_kind(event: dict) -> str:
    """§8.3.3: alias-normalised kind, or inferred from the fields present."""
    kind = K.canonical_kind(raw_kind(event))
    if kind:
        return kind
    if _first(event, "argv", "command") is not None:
        return K.TOOL_EXEC
    if _first(event, "path") is not None:
        return K.FILE_ACCESS
    if _first(event, "query") is not None:
        return K.DNS
    if _first(event, "endpoint", "sni") is not None:
        return K.LLM_CALL
    if _first(event, "peer") is not None:
        return K.EGRESS
    return "Event"


def _argv(event: dict, attrs: dict) -> tuple[list[str], bool]:
    raw = _first(event, "command", "argv")
    if raw is None:
        raw = _first(attrs, "argv", "command")
    if isinstance(raw, str):
        cut = len(raw) > ARGV_MAX_STRING
        text = raw[:ARGV_MAX_STRING]
        try:
            parts = shlex.split(text)
        except ValueError:
            parts = text.split()
        return [redact_text(p) for p in parts] or ["unknown"], cut
    if isinstance(raw, list):
        argv, total, cut = [], 0, len(raw) > ARGV_MAX_ITEMS
        for item in raw[:ARGV_MAX_ITEMS]:
            text = item if isinstance(item, str) else (_scalar(item) or "")
            if len(text) > ARGV_MAX_ITEM:
                text, cut = text[:ARGV_MAX_ITEM], True
            if total + len(text) > ARGV_MAX_TOTAL:
                cut = True
                break
            argv.append(redact_text(text))
            total += len(text)
        return argv or ["unknown"], cut
    return ["unknown"], False


def _int(value: object, high: int = 2**32 - 1) -> int | None:
    """A non-negative integer within [0, high] (pids, uids, ports, token counts), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 20:
            return None
        value = int(text)
    if not isinstance(value, int):
        return None
    return value if 0 <= value <= high else None


def _inner(kind: str, event: dict, attrs: dict) -> dict:
    inner: dict = {"pid": _int(event.get("pid")) or 1}
    uid = _int(event.get("uid"))
    if uid is not None:
        inner["uid"] = uid
    cwd = _scalar(event.get("cwd"))
    if cwd:
        inner["cwd"] = cwd[:1024]
    if kind == K.TOOL_EXEC:
        argv, cut = _argv(event, attrs)
        inner["argv"] = argv
        if cut or event.get("argvTruncated") is True or event.get("argv_truncated") is True:
            inner["argv_truncated"] = True
        if event.get("argvIncomplete") is True or event.get("argv_incomplete") is True:
            inner["argv_incomplete"] = True
    elif kind == K.EGRESS:
        inner["peer"] = _scalar(_first(event, "peer", "endpoint")) or "unknown"
        port = _int(event.get("port"), 65535)
        if port is not None:
            inner["port"] = port
        sni = _scalar(event.get("sni"))
        if sni:
            inner["sni"] = sni
    elif kind == K.DNS:
        inner["query"] = _scalar(_first(event, "query", "peer", "endpoint")) or ""
    elif kind in (K.FILE_ACCESS, K.FILE_DELETE):
        inner["path"] = (_scalar(event.get("path")) or "")[:PATH_MAX]
        if kind == K.FILE_ACCESS and isinstance(event.get("write"), bool):
            inner["write"] = event["write"]
    elif kind in (K.LLM_CALL, K.LLM_API):
        target = _scalar(_first(event, "sni", "endpoint", "peer")) or "llm"
        inner["sni"] = inner["peer"] = target
        if kind == K.LLM_API:
            for src, dst in (("promptTokens", "prompt_tokens"), ("completionTokens", "completion_tokens")):
                value = _int(event.get(src), 2**53)
                if value is not None:
                    inner[dst] = value
    elif kind == K.SSL_CONTENT:
        content = _first(event, "content", "data")
        if content is not None and not isinstance(content, str):
            try:
                content = orjson.dumps(content, default=str).decode()
            except (TypeError, orjson.JSONEncodeError):
                content = str(content)[:CONTENT_MAX]
        inner["content"] = (content or "")[:CONTENT_MAX]
        inner["is_read"] = event.get("isRead") is True
    elif kind == K.SECURITY_ACTION:
        inner["kind"] = _scalar(_first(event, "kind", "status")) or ""
        detail = _scalar(event.get("detail"))
        if detail:
            inner["detail"] = detail[:500]
    elif kind == K.RUNTIME_EVENT:
        inner["kind"] = _scalar(_first(event, "runtimeKind", "status")) or _scalar(attrs.get("progressive.warning")) or ""
    elif kind == K.PROCESS_EXIT:
        status = _scalar(event.get("status"))
        if status:
            inner["status"] = status
        code = _int(_first(event, "exitCode", "exit_code"))
        if code is not None:
            inner["exit_code"] = code
    else:
        inner.update(sanitize_attributes(attrs, max_keys=60))
    return inner


def event_item(event: object, defaults: dict | None = None, *, index: int | None = None) -> dict | Rejection:
    """One API event dict → an /ingest item for `observer.normalize(..., default_source="api")`."""
    if not isinstance(event, dict):
        return Rejection("invalid batch item", index)
    if defaults:
        given = {k: v for k, v in event.items() if v not in (None, "") and not (k in DEFAULTABLE and isinstance(v, (dict, list)))}
        event = {**{k: v for k, v in defaults.items() if k in DEFAULTABLE and v not in (None, "")}, **given}
    attrs = event.get("attributes") if isinstance(event.get("attributes"), dict) else {}
    kind = infer_kind(event)
    if kind == K.COLLECTOR_HEARTBEAT:
        return Rejection(f"unsupported event kind: {kind}", index)
    inner = _inner(kind, event, attrs)
    identity: dict = {"agent": _scalar(event.get("agentId")) or "api-agent"}
    for key, field in (("session", "sessionId"), ("task", "taskId")):
        value = _scalar(event.get(field))
        if value:
            identity[key] = value
    line = {"identity": identity, "event": {kind: inner}}
    item: dict = {"line": line, "eventKind": kind}
    for key in _OVERRIDES:
        value = event.get(key)
        if value is not None and value != "":
            item[key] = value
    source_event_id = _scalar(_first(event, "sourceEventId", "id"))
    if source_event_id:
        item["sourceEventId"] = source_event_id
    at = _first(event, "at", "timestamp")
    if at is not None:
        item["at"] = at
    category = _scalar(_first(event, "eventCategory", "category"))
    if category:
        item["eventCategory"] = category.lower()
    status = _scalar(event.get("status"))
    if status and "status" not in attrs:
        attrs = {**attrs, "status": status}
    if attrs:
        item["attributes"] = attrs
    source = _scalar(event.get("source"))
    if source in ("api", "synthetic", "observer"):
        item["source"] = source
    return item
