"""Producer endpoints (SPEC §8): observer lines, batches, generic JSON/CloudEvents, OTLP, Falco,
Tetragon. Producer-side problems are answered in-band (`accepted: false`, 2xx); only an unreadable
body is a 4xx, and a full durable buffer is a 503 with `Retry-After`."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES
from anysentry.api.http import ApiError, is_json_type, ok, read_bytes, read_json
from anysentry.api.limits import BATCH_LIMIT
from anysentry.api.pipeline import BufferFullError
from anysentry.events.errors import BodyError
from anysentry.events.falco import parse_falco_body
from anysentry.events.generic import parse_events_body
from anysentry.events.model import ParsedBody, Rejection
from anysentry.events.otlp import parse_otlp_body
from anysentry.events.tetragon import parse_tetragon_body

RETRY_AFTER_SECS = "5"


async def _run(request: web.Request, parsed: ParsedBody, *, default_type: str, default_source: str):
    try:
        return await request.app[SERVICES].pipeline.ingest(parsed, headers=request.headers, default_type=default_type,
                                                           default_source=default_source)
    except BufferFullError as exc:
        raise ApiError(503, "ingest buffer full: events are waiting for the store; retry later",
                       {"Retry-After": RETRY_AFTER_SECS}) from exc


async def ingest_line(request: web.Request) -> web.Response:
    body = await read_json(request)
    outcome = await _run(request, ParsedBody(body, [body]), default_type=str(body.get("sourceType") or "observer"),
                         default_source="observer")
    item = dict(outcome.items[0])
    item.pop("index", None)
    return ok(item, status=201)


async def ingest_batch(request: web.Request) -> web.Response:
    body = await read_json(request)
    events = body.get("events")
    if not isinstance(events, list):
        raise ApiError(400, "body must be {\"events\": [ ... ]} with at most 256 observer items")
    items: list = []
    for index, item in enumerate(events):
        if index >= BATCH_LIMIT:
            items.append(Rejection(f"batch limit exceeded: at most {BATCH_LIMIT} items per request", index))
        elif not isinstance(item, dict):
            items.append(Rejection("invalid batch item", index))
        elif item.get("line") is None:
            items.append(Rejection("missing observer line", index))
        else:
            items.append(item)
    # credentials come from the request level, else from the first item (forwarders send them per item)
    first = next((i for i in events if isinstance(i, dict)), {})
    request_fields = {**first, **{k: v for k, v in body.items() if k != "events"}}
    outcome = await _run(request, ParsedBody(request_fields, items),
                         default_type=str(request_fields.get("sourceType") or "forwarder"), default_source="observer")
    return ok(outcome.batch_answer(), status=201)


def _parser_route(parser, default_type: str):
    async def handler(request: web.Request) -> web.Response:
        raw = await read_bytes(request)
        if raw.strip() and request.content_type not in ("", "application/octet-stream", "application/x-ndjson", "text/plain") \
                and not is_json_type(request.content_type):
            raise ApiError(415, f"unsupported content type {request.content_type!r}: send JSON")
        try:
            if parser is parse_events_body:
                parsed = parser(raw, content_type=request.content_type, headers=request.headers)
            else:
                parsed = parser(raw)
        except BodyError as exc:
            raise ApiError(400, str(exc)) from exc
        if not parsed.items:
            return ok({"accepted": False, "acceptedEvents": 0, "rejectedEvents": 0, "items": []}, status=201)
        outcome = await _run(request, parsed, default_type=str(parsed.request.get("sourceType") or default_type),
                             default_source="api")
        return ok(outcome.batch_answer(), status=201)

    return handler


ROUTES = [
    web.post("/security-center/ingest", ingest_line),
    web.post("/security-center/ingest/batch", ingest_batch),
    web.post("/security-center/ingest/events", _parser_route(parse_events_body, "custom")),
    web.post("/security-center/ingest/otel", _parser_route(parse_otlp_body, "otel")),
    web.post("/security-center/ingest/otlp/v1/logs", _parser_route(parse_otlp_body, "otel")),
    web.post("/security-center/ingest/otlp/v1/traces", _parser_route(parse_otlp_body, "otel")),
    web.post("/security-center/ingest/falco", _parser_route(parse_falco_body, "falco")),
    web.post("/security-center/ingest/tetragon", _parser_route(parse_tetragon_body, "tetragon")),
]
