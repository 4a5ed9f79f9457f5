"""CloudEvents 1.0 (SPEC §8.4) → API event dicts (§8.3.2) plus the request's source fields.

Structured mode (an envelope object), batch mode (an array of envelopes) and binary mode (`ce-*`
headers, the body being the data) all end as one flat event dict that `generic.api_item` turns into
an /ingest item, so CloudEvents share the synthesised observer line and the one normaliser. This
module only maps: the envelope, its data, its extension attributes, and which keys are source
credentials (those go to the request and are never stored: the token least of all).

It also holds `redacted_json`, the structural (key- and value-aware) redaction used for every
`rawPreview` built from JSON: text redaction on serialised JSON misses secrets whose quotes are
escaped (`{\\"password\\":\\"x\\"}`), so previews are redacted as trees before serialisation."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import orjson

from anysentry.events import kinds as K
from anysentry.events.model import Rejection
from anysentry.events.redact import REDACTED, is_sensitive_key, redact_text
from anysentry.events.timefmt import parse_time

INVALID_DATA_BASE64 = "invalid CloudEvents data_base64"
INVALID_ENVELOPE = "invalid CloudEvent: specversion and a non-empty type are required"
DEFAULT_SOURCE_TYPE = "webhook"
CE_CONTENT_TYPE = "application/cloudevents+json"
CE_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"

RAW_PREVIEW_LIMIT = 1800
MAX_EXTENSIONS = 64
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

# context attributes of the spec; everything else on an envelope is an extension
RESERVED = frozenset({"specversion", "type", "id", "source", "subject", "time", "datacontenttype", "dataschema", "data", "data_base64"})
# request-level source credentials: moved to the request, never kept on the event or its preview
SOURCE_KEYS = ("sourceId", "sourceName", "sourceType", "token", "collectorId", "nodeName")
# identity defaults an envelope (the "body" of §8.4's table) may carry beside the data
IDENTITY_KEYS = ("workspacePath", "agentId", "sessionId", "userId", "traceId", "runId", "taskId")
_SOURCE_LOWER = {k.lower(): k for k in SOURCE_KEYS}
_IDENTITY_LOWER = {k.lower(): k for k in IDENTITY_KEYS}
_CONSUMED = RESERVED | _SOURCE_LOWER.keys() | _IDENTITY_LOWER.keys()


@dataclass(slots=True)
class CloudEvent:
    """One envelope mapped: raw request fields (source keys and identity defaults found on the
    envelope, headers or data) and the API event dict, or the rejection of the item."""

    request: dict
    event: dict | Rejection


# ---------------------------------------------------------------- small value helpers (shared)

def scalar_text(value: object) -> str | None:
    """A non-empty trimmed text for a string or finite number; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int):
        try:
            text = str(value)
        except ValueError:  # beyond the int → str digit limit
            return None
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = str(int(value)) if value.is_integer() and abs(value) < 1e18 else repr(value)
    else:
        return None
    return text or None


def usable_time(value: object) -> bool:
    """A timestamp §3.4 can read and that lies between the epoch and the year 9999."""
    if value is None or isinstance(value, (bool, dict, list)):
        return False
    try:
        ms = parse_time(value, -1)
    except (OverflowError, ValueError, OSError):
        return False
    return 0 <= ms <= MAX_TIME_MS


def media_type(content_type: object) -> str:
    if not isinstance(content_type, str):
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_ce_content_type(content_type: object) -> bool:
    return media_type(content_type) in (CE_CONTENT_TYPE, CE_BATCH_CONTENT_TYPE)


# ---------------------------------------------------------------- redacted previews

_JSON_STRING_LIMIT = 256 * 1024
_STRING_SCAN = 4096
_TREE_DEPTH = 16
_TREE_WIDTH = 100


def redacted_json(value: object, limit: int = RAW_PREVIEW_LIMIT) -> str:
    """Compact JSON of `value` with sensitive keys and secret-looking text redacted, cut to `limit`.

    A string is a preview of itself (value-redacted); a string holding JSON is redacted as JSON."""
    if isinstance(value, str):
        return _redact_string(value, 0)[:limit]
    try:
        return orjson.dumps(_redact_tree(value, 0)).decode()[:limit]
    except (TypeError, orjson.JSONEncodeError):
        return ""


def _redact_string(text: str, depth: int) -> str:
    stripped = text.strip()
    if depth < 4 and stripped[:1] in ("{", "[") and len(stripped) <= _JSON_STRING_LIMIT:
        try:
            parsed = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, (dict, list)):
            try:
                return orjson.dumps(_redact_tree(parsed, depth + 1)).decode()[:_STRING_SCAN]
            except (TypeError, orjson.JSONEncodeError):
                pass
    # cut after redaction: a secret crossing the scan window is still matched from its start
    return redact_text(text[:_STRING_SCAN * 2])[:_STRING_SCAN]


def _redact_tree(value: object, depth: int) -> object:
    if depth > _TREE_DEPTH:
        return "…"
    if isinstance(value, dict):
        out: dict = {}
        for n, (key, item) in enumerate(value.items()):
            if n >= _TREE_WIDTH:
                out["…"] = f"{len(value) - _TREE_WIDTH} more keys"
                break
            name = key if isinstance(key, str) else str(key)
            out[redact_text(name[:200])] = REDACTED if is_sensitive_key(name) else _redact_tree(item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        items = [_redact_tree(item, depth + 1) for item in value[:_TREE_WIDTH]]
        if len(value) > _TREE_WIDTH:
            items.append(f"… {len(value) - _TREE_WIDTH} more items")
        return items
    if isinstance(value, str):
        return _redact_string(value, depth)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)[:64]
    if value is None or isinstance(value, (bool, int)):
        return value
    return redact_text(str(value)[:_STRING_SCAN])


# ---------------------------------------------------------------- envelope pieces

_STD_ALPHABET = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URL_ALPHABET = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def decode_data_base64(value: object) -> dict | None:
    """Strict `data_base64`: one alphabet (standard or URL-safe), no whitespace, padding absent or
    exact, canonical (re-encoding gives the same text), UTF-8, a JSON object. None when not."""
    if not isinstance(value, str) or not value:
        return None
    if _STD_ALPHABET.fullmatch(value):
        altchars = None
    elif _URL_ALPHABET.fullmatch(value):
        altchars = b"-_"
    else:
        return None
    body = value.rstrip("=")
    padded = len(body) != len(value)
    if (padded and len(value) % 4) or len(body) % 4 == 1:
        return None
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
    again = base64.b64encode(raw, altchars=altchars).decode("ascii")
    if again.rstrip("=") != body or (padded and again != value):
        return None  # non-zero trailing bits: the text does not round-trip
    try:
        data = orjson.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.S)


def parse_traceparent(value: object) -> tuple[str, str] | None:
    """W3C `traceparent` → (trace id, parent span id); None when malformed or all-zero."""
    if not isinstance(value, str) or len(value) > 512:
        return None
    match = _TRACEPARENT.fullmatch(value.strip().lower())
    if not match:
        return None
    version, trace, parent, _, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace == "0" * 32 or parent == "0" * 16:
        return None
    return trace, parent


# `type` substrings → kind, in the order of §8.4 (an `ai` word is matched as a word, see kind_from_type)
_TYPE_KINDS = (
    (("tool", "exec", "command"), K.TOOL_EXEC),
    (("egress", "network", "http"), K.EGRESS),
    (("dns",), K.DNS),
    (("file", "artifact"), K.FILE_ACCESS),
    (("llm", "model"), K.LLM_CALL),
    (("security", "policy"), K.SECURITY_ACTION),
    (("process",), K.PROCESS_EXIT),
)
_EXACT_KINDS = {kind.lower(): kind for kind in K.RECORDED_KINDS}
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def kind_from_type(ce_type: str) -> str:
    """§8.4 kind from a CloudEvents `type` when the data names none.

    Two refinements of the substring table: a last segment that spells a canonical kind
    (`com.acme.FileDelete`, `…llm_api`) is that kind; and `ai` counts only as a word or a word's
    end (`ai`, `OpenAI`, `genai`), so `…workflow.failed` or `…container.created` are not LLM calls."""
    text = ce_type.strip()
    last = text.rsplit(".", 1)[-1] or text
    exact = _EXACT_KINDS.get(re.sub(r"[^a-z0-9]", "", last.lower()))
    if exact:
        return exact
    lowered = text.lower()
    words = {w.lower() for w in _WORDS.findall(text)}
    for needles, kind in _TYPE_KINDS:
        if any(n in lowered for n in needles):
            return kind
        if kind == K.LLM_CALL and any(w == "ai" or (len(w) > 2 and w.endswith("ai")) for w in words):
            return kind
    return last[:128]


# ---------------------------------------------------------------- headers and detection

def header_map(headers: object) -> dict[str, str]:
    """Header names lower-cased (first value wins); `ce-*` values percent-decoded (HTTP binding)."""
    out: dict[str, str] = {}
    if not headers:
        return out
    try:
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return out
    for pair in pairs[:1000]:
        try:
            name, value = pair
        except (TypeError, ValueError):
            continue
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(name, str) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            continue
        key = name.strip().lower()
        text = str(value)
        if key.startswith("ce-"):
            text = unquote(text, errors="replace")
        out.setdefault(key, text)
    return out


def is_binary(headers: dict[str, str]) -> bool:
    return bool(headers.get("ce-specversion", "").strip()) and bool(headers.get("ce-type", "").strip())


def _fold(obj: dict) -> dict:
    """Keys lower-cased; an exactly lower-case key wins over another spelling of it."""
    folded: dict = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            continue
        low = key.lower()
        if low not in folded or key == low:
            folded[low] = value
    return folded


def is_envelope(obj: object) -> bool:
    """The body claims to be a structured CloudEvent (it has a `specversion`)."""
    if not isinstance(obj, dict):
        return False
    return obj.get("specversion") is not None or obj.get("specVersion") is not None or any(
        isinstance(k, str) and k.lower() == "specversion" and v is not None for k, v in obj.items()
    )


def _ce_type(folded: dict) -> str | None:
    value = folded.get("type")
    return value.strip() if isinstance(value, str) and value.strip() else None


# ---------------------------------------------------------------- the two modes

def from_structured(envelope: dict) -> CloudEvent:
    """A structured-mode envelope (one element of a batch, or the whole body)."""
    folded = _fold(envelope)
    request = {_SOURCE_LOWER[k]: v for k, v in folded.items() if k in _SOURCE_LOWER and v is not None}
    request.update({_IDENTITY_LOWER[k]: v for k, v in folded.items() if k in _IDENTITY_LOWER and v is not None})
    ce_type = _ce_type(folded)
    if ce_type is None:
        return CloudEvent(request, Rejection(INVALID_ENVELOPE))
    from_base64 = folded.get("data_base64") is not None
    if from_base64:
        data: object = decode_data_base64(folded["data_base64"])
        if data is None:
            return CloudEvent(request, Rejection(INVALID_DATA_BASE64))
    else:
        data = _coerce_data(folded.get("data"), folded.get("datacontenttype"))
    extensions = {k: v for k, v in folded.items() if k not in _CONSUMED}
    preview = {k: v for k, v in envelope.items() if not (isinstance(k, str) and k.lower() in ("token", "data", "data_base64"))}
    return _build(folded, ce_type, data, extensions, request, preview, from_base64)


def from_binary(body: object, headers: dict[str, str], content_type: str) -> CloudEvent:
    """Binary mode: context attributes and extensions in `ce-*` headers, the body is the data."""
    folded = {k[3:]: v for k, v in headers.items() if k.startswith("ce-") and len(k) > 3}
    if content_type and "datacontenttype" not in folded:
        folded["datacontenttype"] = content_type
    request = {_SOURCE_LOWER[k]: v for k, v in folded.items() if k in _SOURCE_LOWER and v}
    request.update({_IDENTITY_LOWER[k]: v for k, v in folded.items() if k in _IDENTITY_LOWER and v})
    ce_type = _ce_type(folded) or ""
    extensions = {k: v for k, v in folded.items() if k not in _CONSUMED}
    preview = {k: v for k, v in folded.items() if k not in ("token", "data", "data_base64")}
    return _build(folded, ce_type, body, extensions, request, preview, False)


def _coerce_data(data: object, content_type: object) -> object:
    """`data` is an object, or a string holding JSON (unless its content type says otherwise)."""
    if isinstance(data, str):
        ct = media_type(content_type)
        if (not ct or "json" in ct) and data.strip()[:1] in ("{", "["):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                return data
    return data


def _first_text(*candidates: object) -> str | None:
    for value in candidates:
        text = scalar_text(value)
        if text:
            return text
    return None


def _build(folded: dict, ce_type: str, data: object, extensions: dict, request: dict, preview: dict,
           from_base64: bool) -> CloudEvent:
    d = data if isinstance(data, dict) else {}
    rest: dict = {}  # the data without source credentials: the event body and its preview
    for key, value in d.items():
        source_key = _SOURCE_LOWER.get(key.lower()) if isinstance(key, str) else None
        if source_key:  # credentials in the data belong to the request, never to the event
            if value is not None and request.get(source_key) in (None, ""):
                request[source_key] = value
        elif isinstance(key, str):
            rest[key] = value
    event = dict(rest)
    if data is not None and not isinstance(data, dict):
        event["data"] = data  # a non-object payload (text, array): SslContent content, nothing else
    ce_id = scalar_text(folded.get("id"))
    ce_source = scalar_text(folded.get("source"))
    ce_subject = scalar_text(folded.get("subject"))

    event["eventKind"] = _first_text(d.get("eventKind"), d.get("kind"), d.get("anysentry.event.kind")) or kind_from_type(ce_type)
    _put(event, "agentId", d.get("agentId"), d.get("agent"), folded.get("agentid"), ce_subject)
    _put(event, "workspacePath", d.get("workspacePath"), d.get("workspace"), folded.get("workspacepath"), ce_source)
    _put(event, "sessionId", d.get("sessionId"), d.get("session"), folded.get("sessionid"), ce_id)
    _put(event, "runId", d.get("runId"), folded.get("runid"), ce_id)
    trace, parent = scalar_text(d.get("traceId")), None
    if not trace and (parsed := parse_traceparent(d.get("traceparent"))):
        trace, parent = parsed
    trace = trace or scalar_text(folded.get("traceid"))
    if not trace and (parsed := parse_traceparent(folded.get("traceparent"))):
        trace, parent = parsed
    _put(event, "traceId", trace)
    if parent and not scalar_text(d.get("parentSpanId")):
        event["parentSpanId"] = parent
    for candidate in (d.get("at"), d.get("timestamp"), folded.get("time")):
        if usable_time(candidate):
            event["at"] = candidate
            break
    _put(event, "sourceEventId", ce_id, d.get("sourceEventId"), d.get("id"))

    attributes: dict = {
        "cloudEventId": ce_id or "",
        "cloudEventType": ce_type,
        "cloudEventSource": ce_source or "",
        "cloudEventSpecVersion": scalar_text(folded.get("specversion")) or "",
    }
    schema = scalar_text(folded.get("dataschema"))
    if schema:
        attributes["cloudEventDataSchema"] = schema
    content_type = scalar_text(folded.get("datacontenttype"))
    if content_type:
        attributes["cloudEventContentType"] = content_type
    if from_base64:
        attributes["cloudEventDataBase64"] = True
    for name, value in list(extensions.items())[:MAX_EXTENSIONS]:
        key = f"cloudevents.{name}"
        attributes[key] = REDACTED if is_sensitive_key(key) else value
    data_attrs = d.get("attributes")
    if isinstance(data_attrs, dict):
        for key, value in data_attrs.items():
            attributes.setdefault(key, value)
    event["attributes"] = attributes
    # the preview is the envelope as received, minus the token, with decoded data in place of data_base64
    event["rawPreview"] = {**preview, "data": rest if isinstance(data, dict) else data} if data is not None else preview
    if request.get("sourceName") in (None, "") and ce_source:
        request["sourceName"] = ce_source
    return CloudEvent(request, event)


def _put(event: dict, key: str, *candidates: object) -> None:
    value = _first_text(*candidates)
    if value:
        event[key] = value
    else:
        event.pop(key, None)
