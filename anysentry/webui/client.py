"""The web UI's only way to the data: an async HTTP client of the AnySentry API (SPEC §3).

The UI never opens the store; it reads and acts through the same endpoints any client uses, with the
admin token (SPEC §27) held on the UI server, never sent to the browser. Every failure — the API
unreachable, a timeout, an error answer, a body that is not JSON — becomes one `ApiError` whose
message a page can show as it is."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp

BASE_PATH = "/security-center"
DEFAULT_TIMEOUT_SECS = 15.0
TOKEN_HEADER = "X-AnySentry-Admin-Token"


class ApiError(Exception):
    """A failed API call, with a message fit for the page (`status` is 0 when no answer came)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def normalize_api_url(url: str) -> str:
    """`http://host:29653`, `http://host:29653/` and `.../security-center` all name the same API."""
    text = (url or "").strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"API URL must look like http://host:port, got {url!r}")
    if text.endswith(BASE_PATH):
        text = text[: -len(BASE_PATH)]
    return text


def read_admin_token(token_file: str | None = None) -> str | None:
    """The admin token from a file (a mounted Secret) or $ANYSENTRY_ADMIN_TOKEN; None when neither."""
    if token_file:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read admin token file {token_file}: {exc.strerror or exc}") from exc
        if not token:
            raise ValueError(f"admin token file {token_file} is empty")
        return token
    for name in ("ANYSENTRY_ADMIN_TOKEN", "ANYSENTRY_MANAGEMENT_TOKEN"):  # admin wins, as in the API
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    return None


def segment(value: str) -> str:
    """One path segment (an id) made safe to put in a URL."""
    return quote(str(value), safe="")


class ApiClient:
    """Calls `<api_url>/security-center<path>` and returns the unwrapped `data` of the answer."""

    def __init__(self, api_url: str, admin_token: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECS):
        self.api_url = normalize_api_url(api_url)
        self._headers = {"Accept": "application/json"}
        if admin_token:
            self._headers[TOKEN_HEADER] = admin_token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def has_token(self) -> bool:
        return TOKEN_HEADER in self._headers

    def _session_for_loop(self) -> aiohttp.ClientSession:
        # a session is bound to the loop that created it; the UI server may run on its own loop
        if self._closed:
            raise ApiError("the UI server is shutting down")
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
            self._loop = loop
        return self._session

    async def request(self, method: str, path: str, body: dict | None = None):
        url = self.api_url + BASE_PATH + path
        try:
            async with self._session_for_loop().request(method, url, json=body) as resp:
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = None
                if resp.status >= 400:
                    raise ApiError(_error_message(method, path, resp.status, payload, self.has_token), resp.status)
                if not isinstance(payload, dict):
                    raise ApiError(f"{method} {path}: the API answered something that is not JSON", resp.status)
                return payload.get("data", payload)
        except ApiError:
            raise
        except asyncio.TimeoutError as exc:
            raise ApiError(f"the API at {self.api_url} did not answer {method} {path} in time") from exc
        except aiohttp.ClientError as exc:
            raise ApiError(f"the API at {self.api_url} is unreachable ({exc.__class__.__name__}: {exc})") from exc

    async def get(self, path: str):
        return await self.request("GET", path)

    async def post(self, path: str, body: dict | None = None):
        return await self.request("POST", path, body or {})

    async def put(self, path: str, body: dict):
        return await self.request("PUT", path, body)

    async def close(self) -> None:
        self._closed = True
        if self._session is not None and not self._session.closed:
            await self._session.close()


def _error_message(method: str, path: str, status: int, payload, has_token: bool) -> str:
    message = payload.get("message") if isinstance(payload, dict) else None
    if status == 401 and has_token:
        return "the API rejected the UI's admin token: check --admin-token-file / ANYSENTRY_ADMIN_TOKEN"
    if status == 401:
        return ("the API requires the admin token for this action: start the UI with --admin-token-file "
                "or ANYSENTRY_ADMIN_TOKEN")
    return f"{message or 'request failed'} (HTTP {status} on {method} {path})"
