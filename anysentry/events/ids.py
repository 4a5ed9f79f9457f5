"""Identifiers derived by hashing (SPEC §4.1): the same inputs always give the same id."""

from __future__ import annotations

import hashlib


def _part(p: object) -> str:
    if p is None:
        return ""
    if isinstance(p, bool):
        return "true" if p else "false"
    if isinstance(p, int):
        return str(p)
    if isinstance(p, float):
        return str(int(p)) if p.is_integer() else repr(p)
    return str(p)


def hash_id(prefix: str, parts: list | tuple, length: int = 16) -> str:
    """`prefix_` + first `length` hex chars of sha1 over every part followed by a NUL byte."""
    joined = "".join(_part(p) + "\0" for p in parts)
    return f"{prefix}_{hashlib.sha1(joined.encode('utf-8', 'surrogatepass')).hexdigest()[:length]}"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
