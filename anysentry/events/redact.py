"""Redaction (SPEC §5): free-text value patterns and key-aware attribute redaction with limits.

Everything that leaves `anysentry.events` has passed through here: nothing unredacted is stored,
returned, exported, audited or sent to a webhook."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any, Final

import orjson

try:  # the marker scan in one pass over ASCII text (setup.py builds it when it finds a C compiler)
    from anysentry.events._scan import find_marker as _native_find_marker
except ImportError:
    _native_find_marker = None
_FIND_MARKER: Any = _native_find_marker  # one name for both outcomes (mypyc refuses an import over a None)

REDACTED: Final = "[redacted]"

_VALUE_END = r"""[^"'\s,}&\\]+"""
_QUOTE = r"""(?:\\*["'])?"""
_BEARER = re.compile(r"""(?i)(authorization""" + _QUOTE + r"""\s*[:=]\s*""" + _QUOTE + r"""\s*(?:bearer|basic|token)\s+)""" + _VALUE_END)
# a key that is, or ends with, one of the secret words (GITHUB_TOKEN, x-api-key, --password, "secret");
# no repeated prefix group before the word: that made matching quadratic on crafted input
_ASSIGNMENT = re.compile(
    r"""(?i)((?<![A-Za-z0-9])"""
    r"""(?:authorization|api[_-]?key|access[_-]token|refresh[_-]token|id[_-]token|token|secret|password|passwd|credential)"""
    + _QUOTE + r"""\s*[:=]\s*""" + _QUOTE + r""")(?!\[redacted\]|(?:bearer|basic|token)\s+\[redacted\])""" + _VALUE_END
)
_SK_KEY = re.compile(r"sk-[A-Za-z0-9_-]{12,}")
_MARKERS: Final = ("author", "key", "token", "secret", "passw", "credential", "sk-")  # passw covers passwd
# every key of _ASSIGNMENT holds one of these words (the §5.1 markers but `sk-`); per word, the key
# spellings holding it and how many characters before it they start
_KEY_WORDS: Final = (
    ("author", ((0, ("authorization",)),)),
    ("key", ((3, ("apikey",)), (4, ("api_key", "api-key")))),
    ("token", ((0, ("token",)), (3, ("id_token", "id-token")), (7, ("access_token", "access-token")),
               (8, ("refresh_token", "refresh-token")))),
    ("secret", ((0, ("secret",)),)),
    ("passw", ((0, ("passw",)),)),
    ("credential", ((0, ("credential",)),)),
)


def _marked(lowered: str) -> bool:
    for marker in _MARKERS:
        if marker in lowered:
            return True
    return False


def has_marker(text: str) -> bool:
    """Whether `text` holds a §5.1 marker word; `redact_text` returns text without one unchanged."""
    if _FIND_MARKER is not None:
        found = _FIND_MARKER(text, _MARKERS)
        if found is not None:  # None: not ASCII, lowered by Python below
            return bool(found)
    return _marked(text.lower())


def redact_text(text: str) -> str:
    """Apply the three value substitutions of §5.1 in order; cheap when nothing can match."""
    if not text or not has_marker(text):
        return text
    lowered = text.lower()
    if not text.isascii():  # (?i) also folds ſ, ı, İ and the Kelvin sign onto ASCII letters: plain scan
        text = _BEARER.sub(r"\1" + REDACTED, text)
        text = _ASSIGNMENT.sub(r"\1" + REDACTED, text)
        return _SK_KEY.sub("sk-" + REDACTED, text)
    # ASCII: the first two substitutions can only match where a key starts, the third at `sk-`
    starts = _key_starts(lowered)
    if starts:
        if "authorization" in lowered:
            redacted = _BEARER.sub(r"\1" + REDACTED, text)
            if redacted != text:
                text, starts = redacted, _key_starts(redacted.lower())
        text = _assignments(text, starts)
    return _SK_KEY.sub("sk-" + REDACTED, text) if "sk-" in text else text


def _key_starts(lowered: str) -> list[int]:
    """Where a key of _ASSIGNMENT starts in lower-cased ASCII text, ascending."""
    starts = []
    for word, spellings in _KEY_WORDS:
        at = lowered.find(word)
        while at >= 0:
            for offset, keys in spellings:
                if offset <= at and lowered.startswith(keys, at - offset):
                    starts.append(at - offset)
            at = lowered.find(word, at + 1)
    starts.sort()
    return starts


def _assignments(text: str, starts: list[int]) -> str:
    """`_ASSIGNMENT.sub` on ASCII text, trying the pattern only at the key starts.

    Scanning every position with the case-insensitive alternation costs ~50 ns a character; the
    same matches, in the same left-to-right non-overlapping order, come from the key starts."""
    parts: list[str] = []
    done = 0
    for start in starts:
        if start < done:
            continue
        match = _ASSIGNMENT.match(text, start)  # the lookbehind still sees text[start - 1]
        if match is not None:
            parts += (text[done:match.end(1)], REDACTED)
            done = match.end()
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


_HEAD_END = re.compile(r"[,}&]")
_HEAD_MARGIN = 256  # not Final: a compiled module would inline it, and tests shrink it


_recurring: dict[str, str] = {}
RECURRING_LIMIT: Final = 4096
RECURRING_MAX_LEN: Final = 1024


def redact_recurring(text: str) -> str:
    """`redact_text` for text that recurs, like the agent, workspace, trace and titles an alert
    carries for every event of an incident: scanned once while it is among the last few thousand."""
    done = _recurring.get(text)
    if done is None:
        done = redact_text(text)
        if len(text) <= RECURRING_MAX_LEN:
            if len(_recurring) >= RECURRING_LIMIT:
                _recurring.clear()
            _recurring[text] = done
    return done


def redact_head(text: str, limit: int) -> str:
    """`redact_text(text)[:limit]`, redacting only a bounded prefix of a long text.

    No substitution can match `,`, `}` or `&`, so the prefix that ends with the first of them at or
    past `limit` redacts exactly as it does inside the whole text (a secret straddling `limit` is
    redacted whole). Without such a boundary, or when redaction shrank the prefix below `limit`,
    the whole text is redacted."""
    if len(text) > limit + _HEAD_MARGIN:
        end = _HEAD_END.search(text, limit)
        if end is not None:
            head = redact_text(text[: end.end()])
            if len(head) >= limit:
                return head[:limit]
    return redact_text(text)[:limit]


_SENSITIVE_WORDS = (
    "authorization", "api_key", "apikey", "access_token", "accesstoken", "refresh_token",
    "refreshtoken", "id_token", "idtoken", "token", "secret", "password", "passwd",
    "credential", "credentials",
)
_COUNTER_WORDS = ("token_count", "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=8192)
def is_sensitive_key(key: str) -> bool:
    """§5.2: a `_`-delimited segment run names a secret, and no segment run names a token counter."""
    padded = "_" + _NON_ALNUM.sub("_", key.lower()).strip("_") + "_"
    if not any(f"_{w}_" in padded for w in _SENSITIVE_WORDS):
        return False
    return not any(f"_{w}_" in padded for w in _COUNTER_WORDS)


def clean_value(value: object, max_len: int) -> str | int | float | bool | None:
    """One attribute value: finite numbers and booleans kept, strings redacted and cut,
    nested values flattened to compact JSON text first, None dropped."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)[:max_len]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = str(value)
    return redact_text(text)[:max_len]


def sanitize_attributes(
    attrs: object, *, max_keys: int = 120, max_value: int = 240, max_key: int = 80
) -> dict[str, str | int | float | bool]:
    """§5.3 limits plus key-aware redaction for a producer-supplied attribute map."""
    out: dict[str, str | int | float | bool] = {}
    if not isinstance(attrs, dict):
        return out
    for raw_key, value in attrs.items():
        if len(out) >= max_keys:
            break
        key = redact_text(str(raw_key))[:max_key]
        if not key:
            continue
        if is_sensitive_key(key):
            out[key] = REDACTED
            continue
        cleaned = clean_value(value, max_value)
        if cleaned is not None:
            out[key] = cleaned
    return out


_DETAIL_KEY = re.compile(r"(?i)api[-_]?key|token|secret|password|passwd|credential|authorization|cookie|private[-_]?key")


def redact_details(value: object, depth: int = 0) -> object:
    """Audit `details` (§5.3): secret-looking keys hidden, depth/size bounded, text redacted."""
    if isinstance(value, dict):
        if depth >= 4:
            return "[truncated]"
        out = {}
        for k, v in list(value.items())[:80]:
            key = str(k)
            out[key] = REDACTED if _DETAIL_KEY.search(key) else redact_details(v, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        if depth >= 4:
            return "[truncated]"
        return [redact_details(v, depth + 1) for v in list(value)[:50]]
    if isinstance(value, str):
        return redact_text(value)[:1000]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def bounded_details(details: object, limit: int = 12000) -> object:
    """Redacted details, or `{truncated: true, preview}` when the JSON exceeds `limit` chars."""
    cleaned = redact_details(details if details is not None else {})
    text = orjson.dumps(cleaned, default=str).decode()
    if len(text) <= limit:
        return cleaned
    return {"truncated": True, "preview": text[: limit - 200]}
