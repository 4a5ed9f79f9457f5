"""`POST /ingest/events` bodies (SPEC §8.3, §8.4) → request fields and /ingest items.

`parse_events_body` reads every body form: `{events: [...]}`, `{event: {...}}`, one top-level event,
a JSON array (of requests or structured CloudEvents), a structured CloudEvent and a binary one (its
`ce-*` headers). Request-level source fields and identity defaults go to `ParsedBody.request`; each
event becomes an /ingest item for `observer.normalize(item, source=..., default_source="api")` or a
`Rejection` with a reason the producer is told. Only an unreadable body (not UTF-8, malformed JSON,
a bare scalar) raises, and only `BodyError`.

`api_item` is the one door from an API event dict (§8.3.2) to an item: it removes what producers
get wrong (garbage types, numbers no store can hold, unredacted identity text, nested kinds) before
`synthesize.event_item` builds the observer line, and gives the item a structurally redacted preview."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from types import MappingProxyType

import orjson

from anysentry.events import cloudevents as ce
from anysentry.events.errors import BodyError
from anysentry.events.model import ParsedBody, Rejection
from anysentry.events.redact import redact_text
from anysentry.events.synthesize import DEFAULTABLE, event_item, infer_kind

log = logging.getLogger(__name__)

MAX_EVENTS = 500
SOURCE_TYPES = ("observer", "forwarder", "webhook", "otel", "custom", "falco", "tetragon")
DEFAULT_SOURCE_TYPE = "custom"
REQUEST_KEYS = (
    "sourceId", "sourceName", "sourceType", "token", "collectorId", "nodeName",
    "workspacePath", "agentId", "sessionId", "userId", "traceId", "runId", "taskId",
)
# a body with any of these (non-null) is itself one event (§8.3.1)
EVENT_MARKERS = ("eventKind", "kind", "subject", "attributes", "argv", "command", "peer", "endpoint", "query", "path")

INVALID_ITEM = "invalid batch item"
TOO_MANY = f"too many events: at most {MAX_EVENTS} per request"
EVENTS_NOT_LIST = "invalid events: expected a list of event objects"
NO_EVENT = "no event found in body"
INVALID_EVENT = "invalid event"  # last-resort guard; a parser bug, never an expected outcome

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_EMPTY = object()

# identity and correlation text: value-redacted and bounded here, because the normaliser stores it as given
_TEXT_FIELDS = {
    "agentId": 512, "sessionId": 512, "userId": 512, "runId": 512, "workspacePath": 1024, "cwd": 1024,
    "taskId": 256, "traceId": 256, "spanId": 256, "parentSpanId": 256, "collectorId": 256, "nodeName": 256,
    "id": 256, "sourceEventId": 256,
}
_INT_FIELDS = ("pid", "uid", "port", "promptTokens", "completionTokens", "exitCode", "exit_code")
_NUMBER_FIELDS = ("tokenCount", "latencyMs")
_TIME_FIELDS = ("at", "timestamp")
_REQUEST_ONLY = frozenset({"sourceId", "sourceName", "sourceType", "token"})
_INT64 = (-(2**63), 2**63 - 1)
_NUMBER_MAX = 2.0**53
_KIND_MAX = 128
_CONTENT_DEPTH = 64
_OBJECT_DEPTH = 256


def parse_events_body(
    body: bytes | str | object,
    *,
    content_type: str = "application/json",
    headers: Mapping[str, str] = _NO_HEADERS,
) -> ParsedBody:
    """One /ingest/events body → `ParsedBody(request, items)`; raises only `BodyError`."""
    header_map = ce.header_map(headers)
    binary = ce.is_binary(header_map)
    value = _load(body, content_type, binary)
    batch = _Batch()
    if binary:
        event = ce.from_binary(None if value is _EMPTY else value, header_map, content_type)
        request = clean_request(event.request, ce.DEFAULT_SOURCE_TYPE)
        batch.add_event(event.event, _defaults(request))
        return ParsedBody(request, batch.items)
    if value is _EMPTY or value is None:
        return ParsedBody(clean_request({}, DEFAULT_SOURCE_TYPE), [])
    if isinstance(value, dict):
        return ParsedBody(_read_request(value, batch, content_type, top=True), batch.items)
    if isinstance(value, list):
        request = None
        for element in value:
            if isinstance(element, dict):
                fields = _read_request(element, batch, content_type, top=False)
                request = request if request is not None else fields  # source fields: the first element's
            else:
                batch.add(Rejection(INVALID_ITEM))
        return ParsedBody(request or clean_request({}, DEFAULT_SOURCE_TYPE), batch.items)
    raise BodyError(f"JSON body must be an object or an array, not {_json_type(value)}")


class _Batch:
    """Items in input order; `index` is the position; beyond MAX_EVENTS every item is rejected."""

    def __init__(self) -> None:
        self.items: list = []

    def add(self, item: dict | Rejection) -> None:
        if len(self.items) >= MAX_EVENTS:
            item = Rejection(TOO_MANY)
        if isinstance(item, Rejection):
            item.index = len(self.items)
        self.items.append(item)

    def add_event(self, event: object, defaults: dict) -> None:
        if len(self.items) >= MAX_EVENTS:  # no work for what is rejected anyway
            self.add(Rejection(TOO_MANY))
        elif ce.is_envelope(event):
            mapped = ce.from_structured(event)  # type: ignore[arg-type]
            own = _defaults(clean_request(mapped.request, ce.DEFAULT_SOURCE_TYPE))
            self.add(api_item(mapped.event, {**defaults, **own}, index=len(self.items)))
        else:
            self.add(api_item(event, defaults, index=len(self.items)))


def _read_request(obj: dict, batch: _Batch, content_type: str, *, top: bool) -> dict:
    """One request object (the body, or an element of a top-level array) → its request fields;
    its events are added to `batch`."""
    if ce.is_envelope(obj):
        mapped = ce.from_structured(obj)
        request = clean_request(mapped.request, ce.DEFAULT_SOURCE_TYPE)
        full = len(batch.items) >= MAX_EVENTS
        batch.add(Rejection(TOO_MANY) if full else api_item(mapped.event, _defaults(request), index=len(batch.items)))
        return request
    request = clean_request(obj, DEFAULT_SOURCE_TYPE)
    defaults = _defaults(request)
    events = obj.get("events")
    if events is not None:
        if not isinstance(events, list):
            batch.add(Rejection(EVENTS_NOT_LIST))
        for event in events if isinstance(events, list) else ():
            batch.add_event(event, defaults)
    elif obj.get("event") is not None:
        batch.add_event(obj["event"], defaults)
    elif any(obj.get(key) is not None for key in EVENT_MARKERS):
        batch.add_event({k: v for k, v in obj.items() if k not in _REQUEST_ONLY}, defaults)
    elif ce.is_ce_content_type(content_type):
        batch.add(Rejection(ce.INVALID_ENVELOPE))
    elif any(key not in REQUEST_KEYS for key in obj) or (not top and not obj):
        batch.add(Rejection(NO_EVENT if top else INVALID_ITEM))
    return request


def _defaults(request: dict) -> dict:
    return {k: request[k] for k in DEFAULTABLE if k in request}


def clean_request(raw: dict, default_type: str) -> dict:
    """Request-level fields as text: the token kept exactly (it is only hashed, never stored),
    every other value redacted and bounded; `sourceType` one of §22.1's, else `default_type`."""
    out: dict = {}
    for key in REQUEST_KEYS:
        value = raw.get(key)
        if key == "token":
            token = ce.scalar_text(value)
            if token:
                out["token"] = token
            continue
        text = scrub_text(value, 1024 if key == "workspacePath" else 512)
        if text:
            out[key] = text
    source_type = out.get("sourceType", "").lower()
    out["sourceType"] = source_type if source_type in SOURCE_TYPES else default_type
    return out


# ---------------------------------------------------------------- body decoding

def _load(body: object, content_type: str, binary: bool) -> object:
    """Body → a JSON value, or _EMPTY for an empty body. Binary-mode CloudEvents of a non-JSON
    media type keep their text as data."""
    if body is None:
        return _EMPTY
    if isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyError(f"body is not valid UTF-8 (invalid byte at offset {exc.start})") from None
    elif isinstance(body, str):
        text = body
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BodyError(f"body is not valid UTF-8 (invalid character at offset {exc.start})") from None
    else:  # already parsed by the caller: normalise it to what orjson would have produced
        try:
            return orjson.loads(orjson.dumps(body))
        except (TypeError, orjson.JSONEncodeError, orjson.JSONDecodeError):
            return _jsonable(body, 0)
    if text.startswith("\ufeff"):
        text, raw = text[1:], raw[3:]
    if not text.strip():
        return _EMPTY
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if binary and "json" not in ce.media_type(content_type):
            return text
        raise BodyError(f"malformed JSON: {_trim(exc)}") from None


def _jsonable(value: object, depth: int) -> object:
    """A parsed body from another JSON reader (stdlib `json`: big integers, NaN, lone surrogates)
    as orjson would have read it: big integers as floats, non-finite numbers as null, text valid."""
    if depth > _OBJECT_DEPTH:
        raise BodyError("body is not JSON data: nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _valid_text(value)
    if isinstance(value, int):
        if _INT64[0] <= value < 2**64:
            return value
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {_valid_text(_key_text(k)): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    raise BodyError(f"body is not JSON data: {type(value).__name__} value")


def _key_text(key: object) -> str:
    try:
        return key if isinstance(key, str) else str(key)
    except ValueError:
        return ""


def _valid_text(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # lone surrogates
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _trim(exc: Exception, limit: int = 200) -> str:
    return str(exc).strip()[:limit]


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


# ---------------------------------------------------------------- one API event → one item

def api_item(event: object, defaults: dict | None = None, *, index: int | None = None) -> dict | Rejection:
    """An API event dict (§8.3.2) → an /ingest item (synthesised line, explicit overrides, a
    redacted `rawPreview`), or a `Rejection`. Never raises."""
    if isinstance(event, Rejection):
        event.index = index
        return event
    if not isinstance(event, dict):
        return Rejection(INVALID_ITEM, index)
    try:
        prepared = prepare_event(event)
        item = event_item(prepared, defaults, index=index)
        if isinstance(item, Rejection):
            return item
        given = prepared.get("rawPreview")
        preview = ce.redacted_json(given) if isinstance(given, (str, dict, list)) and given else ""
        item["rawPreview"] = preview or ce.redacted_json(_preview_line(item["line"]))
        return item
    except Exception as exc:  # noqa: BLE001 - one bad event must not fail its batch; never log its content
        log.error("api event rejected by a parser error: %s", type(exc).__name__)
        return Rejection(INVALID_EVENT, index)


def _preview_line(line: dict) -> dict:
    """The synthesised line for the preview. argv items are redacted one by one, so a secret that
    shell-splitting spread over items (`echo {"api_key": "x"}` → `{api_key:`, `x,`) survives them:
    when redacting the joined argv finds more, the preview shows that redacted joined text."""
    payload = line.get("event")
    inner = next(iter(payload.values()), None) if isinstance(payload, dict) and payload else None
    argv = inner.get("argv") if isinstance(inner, dict) else None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        return line
    joined = " ".join(argv)
    redacted = redact_text(joined)
    if redacted == joined:
        return line
    kind = next(iter(payload))
    return {**line, "event": {kind: {**inner, "argv": redacted.split(" ")}}}


def prepare_event(event: dict) -> dict:
    """A copy of `event` the synthesiser and normaliser can take as it is.

    - source credentials (`token`, `sourceId`, ...) are request fields: dropped from the event;
    - identity/correlation text is value-redacted and bounded (the normaliser stores it verbatim);
      a non-scalar one is dropped so the request default fills it;
    - integers outside 64 bits, non-finite or absurd numbers and unusable times are dropped
      (they would crash serialisation or land in year 10^290);
    - a non-object `attributes` is dropped; a non-string `content`/`data` becomes JSON text;
    - the kind is decided here from scalar values only (`eventKind`, `kind`, `attributes.eventKind`,
      `attributes.kind`, then inference), redacted and bounded, and set as `eventKind`; a `kind` that
      named the event kind is not kept as the SecurityAction action kind (§8.3.6 reads `kind ?? status`,
      which would make `{kind: "finding", status: "prompt-injection"}` a "security finding")."""
    ev = {k: v for k, v in event.items() if isinstance(k, str) and k not in _REQUEST_ONLY and v is not None}
    for key, limit in _TEXT_FIELDS.items():
        if key in ev:
            text = scrub_text(ev[key], limit)
            if text:
                ev[key] = text
            else:
                del ev[key]
    for key in _INT_FIELDS:
        if key in ev and not _int_ok(ev[key]):
            del ev[key]
    for key in _NUMBER_FIELDS:
        if key in ev and not _number_ok(ev[key]):
            del ev[key]
    for key in _TIME_FIELDS:
        if key in ev and not ce.usable_time(ev[key]):
            del ev[key]
    attrs = ev.get("attributes")
    if not isinstance(attrs, dict):
        ev.pop("attributes", None)
        attrs = {}
    for key in ("content", "data"):
        value = ev.get(key)
        if value is not None and not isinstance(value, str):
            ev[key] = _json_text(value)
    for key in ("eventKind", "kind"):
        if key in ev:
            kind = clean_kind(ev[key])
            if kind:
                ev[key] = kind
            else:
                del ev[key]
    raw = ev.get("eventKind") or ev.get("kind") or clean_kind(attrs.get("eventKind")) or clean_kind(attrs.get("kind"))
    if "eventKind" not in ev:
        # `kind` named the event kind, so it is not also a SecurityAction's action kind (that is `status`)
        ev.pop("kind", None)
    ev["eventKind"] = infer_kind({k: v for k, v in ev.items() if k not in ("attributes", "kind", "eventKind")}
                                 | ({"eventKind": raw} if raw else {}))
    return ev


def scrub_text(value: object, limit: int) -> str | None:
    """A scalar as redacted text of at most `limit` chars; None for non-scalars and empty values."""
    text = ce.scalar_text(value)
    if not text:
        return None
    return redact_text(text[: limit * 4])[:limit].strip() or None


def clean_kind(value: object) -> str | None:
    """A producer kind usable as a name: a string or number, redacted and bounded."""
    text = ce.scalar_text(value)
    if not text:
        return None
    return redact_text(text[: _KIND_MAX * 4])[:_KIND_MAX] or None


def _int_ok(value: object) -> bool:
    """False when the synthesiser would read `value` as an integer no store can hold (or crash)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    if isinstance(value, float):
        return not value.is_integer() or abs(value) <= _INT64[1]
    if isinstance(value, str) and value.strip().isdigit():
        try:
            number = int(value.strip())
        except ValueError:  # digits int() refuses (superscripts) or too many of them
            return False
        return number <= _INT64[1]
    return True


def _number_ok(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return True
    try:
        number = float(value)
    except ValueError:
        return True  # the normaliser reads it as 0
    except OverflowError:
        return False
    return math.isfinite(number) and abs(number) <= _NUMBER_MAX


def _json_text(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(_bounded(value, 0), default=str).decode()


def _bounded(value: object, depth: int) -> object:
    if depth >= _CONTENT_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {str(k): _bounded(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bounded(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        return str(value)[:64] if abs(value) < 10**4000 else "…"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
