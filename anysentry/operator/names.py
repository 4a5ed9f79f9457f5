"""Names of the resources the api writes for REST records (`mirror`, `mirror_routes`): a DNS name
from a display name, and the names to try until one is free."""

from __future__ import annotations

import re
import secrets
from typing import Iterator

DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")  # a resource name (DNS-1123 subdomain characters): fullmatch
NAME_TRIES = 8  # names checked with the API server before one is taken unchecked


def resource_name(text: str, fallback: str, limit: int = 50, *, dots: bool = True) -> str:
    """A DNS name from a display name: lower case, [a-z0-9-] (and `.` unless `dots=False`, for a
    DNS label), runs of `-` collapsed, at most `limit` characters; `fallback` (cleaned the same way,
    else "item") when nothing is left."""
    edge = "-." if dots else "-"
    invalid = r"[^a-z0-9.-]+" if dots else r"[^a-z0-9-]+"
    name = re.sub(invalid, "-", (text or "").lower()).strip(edge)
    name = re.sub(r"-{2,}", "-", name)[:limit].strip(edge)
    if not name:
        name = re.sub(r"[^a-z0-9-]+", "-", fallback.lower()).strip("-")[:limit] or "item"
    return name


def candidate_names(base: str, tries: int = NAME_TRIES) -> Iterator[str]:
    """The names to check for a new resource, in order: `base`, then `base-<6 hex>`."""
    yield base
    for _ in range(tries - 1):
        yield f"{base[:56]}-{secrets.token_hex(3)}"


def unchecked_name(base: str) -> str:
    """`base-<12 hex>`: taken without asking the API server (none of the candidates was free, or it
    could not be asked); nobody holds it in practice."""
    return f"{base[:50]}-{secrets.token_hex(6)}"
