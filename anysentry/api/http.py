"""The wire conventions of SPEC §3: success envelope, unwrapped errors, JSON body reading.

Handlers return plain data; `ok()` wraps it. Every client error is a JSON body that says what is
wrong, never a stack trace."""

from __future__ import annotations

import uuid
from http import HTTPStatus

import orjson
from aiohttp import web

from anysentry.events.timefmt import iso_time

JSON_TYPE = "application/json"


def dumps(data: object) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS, default=_default)


def _default(value: object) -> object:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def ok(data: object, status: int = 200) -> web.Response:
    body = {"code": 200, "message": "Success", "data": data, "requestId": str(uuid.uuid4()), "timestamp": iso_time()}
    return web.Response(body=dumps(body), status=status, content_type=JSON_TYPE)


def raw_json(data: object, status: int = 200) -> web.Response:
    """Unwrapped JSON (the identity snapshot and a few compatibility endpoints)."""
    return web.Response(body=dumps(data), status=status, content_type=JSON_TYPE)


def error_response(status: int, message: str, headers: dict | None = None) -> web.Response:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = {"statusCode": status, "message": message, "error": phrase}
    return web.Response(body=dumps(body), status=status, content_type=JSON_TYPE, headers=headers)


class ApiError(Exception):
    """Raised by handlers for a client error; the error middleware renders it."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def is_json_type(content_type: str) -> bool:
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    return ct == JSON_TYPE or (ct.startswith("application/") and ct.endswith("+json"))


async def read_bytes(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ApiError(413, f"request body too large (limit {request.app._client_max_size} bytes)") from exc


async def read_json(request: web.Request, *, required: bool = False, allow_any_type: bool = False) -> object:
    """The JSON body; {} when empty. Wrong content type → 415, malformed → 400, too big → 413."""
    raw = await read_bytes(request)
    if not raw.strip():
        if required:
            raise ApiError(400, "request body required")
        return {}
    if request.content_type and request.content_type != "application/octet-stream" and not is_json_type(request.content_type):
        raise ApiError(415, f"unsupported content type {request.content_type!r}: send application/json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {str(exc)[:200]}") from exc
    if not allow_any_type and not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


async def read_object(request: web.Request) -> dict:
    return await read_json(request)  # type: ignore[return-value]


def clamp_int(value: object, low: int, high: int, default: int) -> int:
    """Inputs are sanitised, not rejected (§3.1): out-of-range numbers are clamped."""
    try:
        number = int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return default
    return max(low, min(high, number))


def text(value: object, limit: int = 512) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()[:limit]


def truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, (str, int)) and str(value).strip().lower() in ("1", "true", "yes", "on")
