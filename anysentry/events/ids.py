"""Identifiers derived by hashing (SPEC §4.1): the same inputs always give the same id."""

from __future__ import annotations

import hashlib
from typing import Any

try:  # OpenSSL's SHA-1 without hashlib's per-call overhead (setup.py builds it when it can)
    from anysentry.events._sha1 import sha1_hex as _native_sha1_hex
except ImportError:
    _native_sha1_hex = None
_NATIVE: Any = _native_sha1_hex  # one name for both outcomes (mypyc refuses an import over a None)


def part_text(p: object) -> str:
    """`s(p)` of §4.1: '' for None, true/false, decimal integers (no `.0`), else the string."""
    if p is None:
        return ""
    if isinstance(p, bool):
        return "true" if p else "false"
    if isinstance(p, int):
        return str(p)
    if isinstance(p, float):
        return str(int(p)) if p.is_integer() else repr(p)
    return str(p)


def sha1_hex(text: str, length: int = 16) -> str:
    """The first `length` hex chars of sha1 over `text` (UTF-8, lone surrogates passed through)."""
    if _NATIVE is not None:
        return _NATIVE(text, length)  # type: ignore[no-any-return]
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def hash_hex(parts: list | tuple, length: int = 16) -> str:
    """`sha1_hex` over every part's `part_text` followed by a NUL byte."""
    return sha1_hex("".join([part_text(p) + "\0" for p in parts]), length)


def hash_id(prefix: str, parts: list | tuple, length: int = 16) -> str:
    """`prefix_` + `hash_hex(parts)`: ids over the same parts differ only in their prefix."""
    return f"{prefix}_{hash_hex(parts, length)}"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
