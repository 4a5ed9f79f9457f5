"""The OTLP JSON encoding (SPEC §8.5) → plain Python values, read once here so the record walk in
`otlp` never sees which JSON mapping an exporter used.

Reads the OTLP JSON encoding (lowerCamelCase, trace/span ids hex, enums as numbers) and also what
protobuf's generic JSON mapping emits (`MessageToJson`: ids base64, 64-bit ints and enums as
strings) and snake_case field names.

Attributes: `[{key, value: AnyValue}]`, at most 200 read per list; `stringValue`, `intValue` (string
or number), `doubleValue` (number or string), `boolValue`, `bytesValue` (kept as its base64 text),
`arrayValue` / `kvlistValue` (→ Python lists / dicts, at most 64 entries, 8 levels deep)."""

from __future__ import annotations

import base64
import binascii
import math
import re

import orjson

from anysentry.events.errors import BodyError
from anysentry.events.producer_body import bounded_int, epoch_ms

MAX_ATTRIBUTES = 200
INTERNAL_MAX = 8192   # raw string values kept for argv/content before the stored cut
_ANY_DEPTH = 8
_NESTED_MAX = 64

_ANY_KEYS = {
    "stringValue": "s", "string_value": "s", "intValue": "i", "int_value": "i",
    "doubleValue": "d", "double_value": "d", "boolValue": "b", "bool_value": "b",
    "arrayValue": "a", "array_value": "a", "kvlistValue": "k", "kvlist_value": "k",
    "bytesValue": "y", "bytes_value": "y",
}
SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")
_SEVERITY_BASE = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", camel).lower()


def field(obj: object, camel: str) -> object:
    """An OTLP field by its JSON (lowerCamelCase) name or its proto (snake_case) name."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(camel)
    return obj.get(_snake(camel)) if value is None else value


def load_body(body: object) -> dict:
    """The export request as a dict; an empty body is an empty request, anything else not an object
    raises `BodyError`."""
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


def double(raw: object) -> float | None:
    """A finite float from a JSON number or its string form (64-bit values arrive as strings)."""
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
            return raw[:INTERNAL_MAX] if isinstance(raw, str) else None
        if tag == "i":
            return bounded_int(raw, -(2**63), 2**64 - 1)
        if tag == "d":
            return double(raw)
        if tag == "b":
            if isinstance(raw, bool):
                return raw
            return {"true": True, "false": False}.get(raw.strip().lower()) if isinstance(raw, str) else None
        if tag == "a":
            values = field(raw, "values")
            return [any_value(v, depth + 1) for v in values[:_NESTED_MAX]] if isinstance(values, list) else []
        if tag == "k":
            return key_values(field(raw, "values"), depth + 1, _NESTED_MAX)
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


def nanos(value: object) -> int | float | None:
    """A positive `*UnixNano` timestamp (number or string), or None."""
    if isinstance(value, str):
        return bounded_int(value, 1, 10**22) or double(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if (not isinstance(value, float) or math.isfinite(value)) and value > 0 else None


def latency_ms(start: object, end: object) -> float | None:
    """A span's end − start in milliseconds (nanoseconds when both are > 1e13, else epoch s/ms)."""
    s, e = nanos(start), nanos(end)
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


def enum_name(value: object, names: tuple[str, ...], prefix: str) -> str | None:
    """An OTLP enum given as its number or its `PREFIX_NAME` string → the lowercase name."""
    number = bounded_int(value, 0, len(names) - 1)
    if number is not None:
        return names[number]
    if isinstance(value, str) and value.upper().startswith(prefix):
        name = value[len(prefix):].lower()
        return name if name in names else None
    return None


def severity_number(value: object) -> int | None:
    """A log severityNumber (1-24) given as a number or as `SEVERITY_NUMBER_<LEVEL>[2-4]`."""
    number = bounded_int(value, 0, 24)
    if number is not None or not isinstance(value, str):
        return number
    match = re.fullmatch(r"SEVERITY_NUMBER_([A-Z]+)([234]?)", value.strip().upper())
    if not match or match.group(1) not in _SEVERITY_BASE:
        return None
    return _SEVERITY_BASE[match.group(1)] + (int(match.group(2)) - 1 if match.group(2) else 0)
