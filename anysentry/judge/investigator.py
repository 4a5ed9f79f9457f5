"""The L3 tier (SPEC §9.6): a deep investigation by an external investigator endpoint.

`POST <deepModel.url | A3S_SENTRY_L3_URL>` with `{event, timeline, l2Opinion, model, contextTokens}`
(bearer key from `A3S_SENTRY_L3_API_KEY[_FILE]` or an activated connection) and an answer
`{verdict: allow|block, severity, reason}`, optionally in a code fence. L3 is terminal: an
`escalate` answer is parsed but the caller coerces it by the fail mode. Reasons are prefixed `L3: `.
The event and timeline are already redacted (they come from stored events)."""

from __future__ import annotations

import aiohttp
import orjson

from anysentry.events.model import AgentEvent
from anysentry.judge.llm import Connection, TierAnswer, TierError, parse_answer, post_json

TIMELINE_LIMIT = 20  # events
TIMELINE_JSON_LIMIT = 16_000  # chars
TIMELINE_FIELDS = ("at", "eventId", "eventKind", "subject", "verdict", "tier", "severity", "reason", "decisionStatus")


def timeline_item(row: dict | AgentEvent) -> dict:
    """A compact, bounded timeline entry from a stored row or an event."""
    get = row.get if isinstance(row, dict) else (lambda name, default=None: getattr(row, name, default))
    item = {}
    for name in TIMELINE_FIELDS:
        value = get(name, None)
        if isinstance(value, str):
            value = value[:300]
        if value not in (None, ""):
            item[name] = value
    return item


def bounded_timeline(rows: list, limit: int = TIMELINE_LIMIT, size_limit: int = TIMELINE_JSON_LIMIT) -> list[dict]:
    """At most `limit` entries and `size_limit` chars of JSON, newest first as given."""
    out, size = [], 2
    for row in rows[:limit]:
        item = timeline_item(row)
        size += len(orjson.dumps(item)) + 1
        if size > size_limit:
            break
        out.append(item)
    return out


def request_body(conn: Connection, context: dict, timeline: list[dict], l2_opinion: dict | None) -> dict:
    return {"event": context, "timeline": timeline, "l2Opinion": l2_opinion, "model": conn.model,
            "contextTokens": conn.context_tokens}


async def investigate(session: aiohttp.ClientSession, conn: Connection, context: dict, timeline: list[dict],
                      l2_opinion: dict | None) -> TierAnswer:
    """One L3 investigation: TierAnswer (verdict may be `escalate`; the caller coerces it), or
    TierError / TierTimeout / ParseError."""
    if not conn.usable:
        raise TierError("deep investigation connection has no URL or API key")
    status, raw = await post_json(session, conn.url, request_body(conn, context, timeline, l2_opinion),
                                  conn.api_key, conn.timeout_s)
    if status >= 300:
        raise TierError(f"investigator answered HTTP {status}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    return parse_answer(text, prefix="L3: ")


__all__ = ["bounded_timeline", "investigate", "request_body", "timeline_item"]
