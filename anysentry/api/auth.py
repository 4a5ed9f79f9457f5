"""Management authentication (SPEC §27) and actor attribution for the audit log (§25).

Management routes need the admin token; producer routes never accept it as an ingest token."""

from __future__ import annotations

import hashlib
import hmac
import os

from aiohttp import web

from anysentry.api.http import ApiError


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class ManagementAuth:
    def __init__(self, token: str | None):
        self._digest = _digest(token) if token else None

    @classmethod
    def from_env(cls) -> "ManagementAuth":
        return cls(os.environ.get("ANYSENTRY_ADMIN_TOKEN") or os.environ.get("ANYSENTRY_MANAGEMENT_TOKEN") or None)

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    @staticmethod
    def presented(request: web.Request) -> str:
        for header in ("X-AnySentry-Admin-Token", "X-AnySentry-Management-Token"):
            value = request.headers.get(header)
            if value:
                return value.strip()
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return ""

    def require(self, request: web.Request) -> None:
        """Constant-time comparison of SHA-256 digests; missing or wrong → 401."""
        if self._digest is None:
            return
        given = self.presented(request)
        if not given or not hmac.compare_digest(_digest(given), self._digest):
            raise ApiError(401, "management token required")


def actor_from(request: web.Request) -> dict:
    """The audit actor named by request headers (§25)."""
    h = request.headers
    kind = (h.get("x-anysentry-actor-type") or "operator").strip().lower()
    actor = {
        "type": kind if kind in ("system", "api", "operator") else "operator",
        "id": next((h[k].strip() for k in ("x-anysentry-actor", "x-forwarded-user", "x-user-email", "x-operator") if h.get(k, "").strip()), "operator")[:160],
    }
    name = h.get("x-anysentry-actor-name") or h.get("x-user-name")
    if name:
        actor["displayName"] = name.strip()[:160]
    forwarded = h.get("x-forwarded-for", "")
    ip = forwarded.split(",")[0].strip() if forwarded else (h.get("x-real-ip") or request.remote or "")
    if ip:
        actor["sourceIp"] = ip[:80]
    if h.get("user-agent"):
        actor["userAgent"] = h["user-agent"][:300]
    return actor
