"""Body helpers the producer parsers share (Falco, Tetragon, OTLP): reading one object, an array
or NDJSON; bounded numbers and times; redacting nested values; cleaning attributes; request fields.

Everything here fails soft: a body that cannot be read raises `BodyError`, anything else is cleaned."""

from __future__ import annotations

import math
import re

import orjson

from anysentry.events.errors import BodyError
from anysentry.events.model import Rejection
from anysentry.events.redact import REDACTED, is_sensitive_key, redact_text, sanitize_attributes
from anysentry.events.synthesize import DEFAULTABLE, SOURCE_KEYS
from anysentry.events.timefmt import parse_time

MAX_DOCUMENTS = 500          # alerts / events read from one request
ATTRIBUTE_VALUE_MAX = 500    # producer attribute values (the stored limit is applied by the normaliser)
RAW_PREVIEW_MAX = 1800
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_NA = frozenset({"", "<NA>", "N/A", "<na>", "n/a", "null", "None"})
_REQUEST_KEYS = tuple(dict.fromkeys((*SOURCE_KEYS, *DEFAULTABLE, "collectorId", "nodeName")))


# ---------------------------------------------------------------- shared body helpers (Tetragon too)

def _json_error(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__


def load_documents(body: object, what: str, limit: int = MAX_DOCUMENTS) -> tuple[list, int]:
    """A body (bytes/str/parsed JSON) → (its top-level JSON documents, NDJSON lines left unread).

    A body that is one JSON text gives one document; otherwise each non-blank line is parsed on its
    own (at most `limit`; the rest are only counted) and a bad line becomes a `Rejection` in its
    place. Raises `BodyError` when nothing at all can be read (non-JSON, a truncated single
    document, a body that is not text)."""
    if body is None:
        return [], 0
    if isinstance(body, (dict, list)):
        return [body], 0
    if isinstance(body, memoryview):
        body = body.tobytes()
    if isinstance(body, bytearray):
        body = bytes(body)
    if not isinstance(body, (bytes, str)):
        raise BodyError(f"{what} body must be JSON text")
    if not body.strip():
        return [], 0
    try:
        return [orjson.loads(body)], 0
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        first_error = exc
    newline = b"\n" if isinstance(body, bytes) else "\n"
    docs: list = []
    unread = 0
    for number, line in enumerate(body.split(newline), 1):
        if not line.strip():
            continue
        if len(docs) >= limit:
            unread += 1
            continue
        try:
            docs.append(orjson.loads(line))
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            docs.append(Rejection(f"malformed JSON on line {number}: {_json_error(exc)}"))
    if all(isinstance(d, Rejection) for d in docs):
        raise BodyError(f"malformed JSON: {_json_error(first_error)}")
    return docs, unread


def text(value: object, limit: int = 512) -> str | None:
    """A scalar as stripped, value-redacted text cut to `limit`; None for empty, nested or NA."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        out = "true" if value else "false"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        out = str(int(value)) if value.is_integer() and abs(value) < 1e18 else repr(value)
    elif isinstance(value, int):
        if not -(2**64) < value < 2**64:
            return None
        out = str(value)
    elif isinstance(value, str):
        out = value.strip()
    else:
        return None
    if out in _NA:
        return None
    return redact_text(out[: limit * 4])[:limit] or None


def bounded_int(value: object, lo: int, hi: int) -> int | None:
    """An integer (int, integral float or decimal string) inside [lo, hi], else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    elif isinstance(value, str):
        stripped = value.strip()
        if not stripped or len(stripped) > 40:
            return None
        try:
            value = int(stripped)
        except ValueError:
            return None
    if not isinstance(value, int):
        return None
    return value if lo <= value <= hi else None


def leading_int(value: object) -> int | None:
    """Falco renders ids as `0(root)` or `1234(bash)`: the leading integer, if any."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return bounded_int(value, -(2**63), 2**64)
    if isinstance(value, str):
        match = re.match(r"\s*(-?\d{1,20})", value)
        return int(match.group(1)) if match else None
    return None


def epoch_ms(value: object) -> int | None:
    """Epoch ms from ISO-8601 (nanosecond fractions allowed) or a number: > 1e13 is ns, > 1e10 ms,
    else seconds. None when unreadable or outside year 1970..9999."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        stripped = value.strip()
        number = bounded_int(stripped, 1, 10**22)
        if number is not None:
            value = number
        else:
            ms = parse_time(stripped[:64], -1)
            return ms if 0 < ms <= MAX_EPOCH_MS else None
    if isinstance(value, int):
        if not 0 < value < 10**22:
            return None
        ms = value // 1_000_000 if value > 1e13 else (value if value > 1e10 else value * 1000)
    elif isinstance(value, float) and math.isfinite(value) and 0 < value < 1e22:
        ms = int(value / 1e6 if value > 1e13 else (value if value > 1e10 else value * 1000))
    else:
        return None
    return ms if 0 < ms <= MAX_EPOCH_MS else None


def redact_tree(value: object, depth: int = 0, limit: int = 2000) -> object:
    """A JSON tree with sensitive keys hidden and strings value-redacted; depth and size bounded."""
    if isinstance(value, dict):
        if depth >= 8:
            return "[truncated]"
        return {
            redact_text(str(k)[:200]): (REDACTED if is_sensitive_key(str(k)) else redact_tree(v, depth + 1, limit))
            for k, v in list(value.items())[:100]
        }
    if isinstance(value, list):
        if depth >= 8:
            return "[truncated]"
        return [redact_tree(v, depth + 1, limit) for v in value[:100]]
    if isinstance(value, str):
        return redact_text(value[: limit * 2])[:limit]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def dumps_preview(value: object, limit: int = RAW_PREVIEW_MAX) -> str:
    """Compact JSON of a redacted tree, cut: the rawPreview of a producer record."""
    try:
        return orjson.dumps(redact_tree(value)).decode()[:limit]
    except (TypeError, orjson.JSONEncodeError):
        return ""


def redact_json_text(value: str, limit: int = ATTRIBUTE_VALUE_MAX) -> str:
    """Text that may hold JSON (tool arguments, structured log bodies): key-aware redaction of the
    parsed tree when it parses, value redaction otherwise; cut to `limit`."""
    stripped = value.strip()
    if stripped[:1] in ("{", "[") and len(stripped) <= 65536:
        try:
            parsed = orjson.loads(stripped)
        except (orjson.JSONDecodeError, ValueError):
            parsed = None
        if isinstance(parsed, (dict, list)):
            try:
                return redact_text(orjson.dumps(redact_tree(parsed, limit=limit)).decode())[:limit]
            except (TypeError, orjson.JSONEncodeError):
                pass
    return redact_text(value[: limit * 4])[:limit]


def clean_attributes(attrs: dict, max_keys: int = 120) -> dict:
    """Producer attributes: keys value-redacted, then §5.2/§5.3 (key-aware, values ≤ 500 chars);
    nested values become redacted JSON text."""
    prepared: dict = {}
    for key, value in attrs.items():
        if len(prepared) >= max_keys:
            break
        name = redact_text(str(key)[:200])[:80]
        if not name or name in prepared:
            continue
        if isinstance(value, (dict, list)):
            value = dumps_preview(value, ATTRIBUTE_VALUE_MAX)
        elif isinstance(value, str):
            value = redact_json_text(value)
        prepared[name] = value
    return sanitize_attributes(prepared, max_keys=max_keys, max_value=ATTRIBUTE_VALUE_MAX)


def source_request(doc: object, source_type: str, source_name: str) -> dict:
    """Request-level source fields and defaults from a body object (§8.3.1 / §22.2)."""
    request: dict = {}
    if isinstance(doc, dict):
        for key in _REQUEST_KEYS:
            value = doc.get(key)
            if isinstance(value, str) and value.strip():
                # the token is a credential the API hashes; it is never put on an event
                request[key] = value.strip()[:512] if key == "token" else redact_text(value.strip()[:512])
    request["sourceType"] = request.get("sourceType") or source_type
    request["sourceName"] = request.get("sourceName") or source_name
    return request


def event_defaults(request: dict) -> dict:
    return {k: v for k, v in request.items() if k in DEFAULTABLE}


def expand_documents(docs: list, what: str, is_event) -> tuple[list, dict | None]:
    """Top-level documents → (event candidates, the object that carries source fields).

    Arrays are batches; a `{"events": [...]}` object that is not itself an event is a wrapper whose
    other keys are request fields. A lone top-level scalar is a body error; inside a batch or NDJSON
    it is a rejected item."""
    out: list = []
    carrier: dict | None = None
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("events"), list) and not is_event(doc):
            carrier = carrier or doc
            out.extend(doc["events"])
        elif isinstance(doc, list):
            out.extend(doc)
        elif isinstance(doc, (dict, Rejection)):
            out.append(doc)
        elif len(docs) == 1:
            raise BodyError(f"{what} body must be a JSON object, an array or NDJSON")
        else:
            out.append(None)
    if carrier is None:
        carrier = next((d for d in out if isinstance(d, dict)), None)
    return out, carrier


def cap_documents(candidates: list, what: str, unread: int = 0, limit: int = MAX_DOCUMENTS) -> list:
    """At most `limit` candidates; one trailing `Rejection` says how many were dropped."""
    dropped = max(0, len(candidates) - limit) + unread
    if not dropped:
        return candidates
    return candidates[:limit] + [Rejection(f"too many {what} events: at most {limit} per request, {dropped} dropped")]


# ---------------------------------------------------------------- Falco
