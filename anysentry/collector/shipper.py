"""Shipping the disk buffer to the api, oldest first: observer lines to POST /ingest/batch (SPEC
§8.2), Falco and Tetragon events to /ingest/falco and /ingest/tetragon, the ingest token in the
`X-AnySentry-Ingest-Token` header (never on disk).

A batch leaves the buffer only once the api has answered for it. Network errors, 408/429/5xx and
answers that say the api is not ours to judge yet (401/403/404 from a proxy, an ingest token the api
refuses — the operator may not have issued it yet) are retried with exponential backoff, honouring
Retry-After. What the api rejects for good — an item it cannot parse, or a whole request it
answers 400/413/415 (then the batch is halved until the bad item stands alone) — is counted and
not sent again."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp
import orjson

from anysentry.collector.buffer import DiskBuffer
from anysentry.collector.settings import CollectorSettings, TokenSource
from anysentry.collector.stats import CollectorStats
from anysentry.ops.sources import DISABLED, ID_MISMATCH, INVALID_TOKEN, TOKEN_REQUIRED

log = logging.getLogger(__name__)

PATHS = {"batch": "/ingest/batch", "falco": "/ingest/falco", "tetragon": "/ingest/tetragon"}
CREDENTIAL_REASONS = frozenset({INVALID_TOKEN, ID_MISMATCH, DISABLED, TOKEN_REQUIRED})
RETRY_STATUSES = frozenset({401, 403, 404, 408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 300.0
_LOG_EVERY = 60.0


@dataclass(frozen=True)
class Retry:
    """Send the same batch again later; `after` is the api's Retry-After when it gave one."""

    reason: str
    after: float | None = None


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def backoff(attempt: int, cap: float) -> float:
    return min(cap, 0.5 * 2 ** min(attempt - 1, 16)) * random.uniform(0.5, 1.0)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when the collector stops."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        pass


@dataclass(frozen=True)
class Answer:
    """What the api answered to one POST; `status` 0 when it did not answer (`error` says why)."""

    status: int
    body: dict  # the JSON object answered, else {}
    raw: bytes = b""
    retry_after: float | None = None
    error: str = ""


async def post(session: aiohttp.ClientSession, settings: CollectorSettings, token: TokenSource, path: str,
               body: bytes) -> Answer:
    """POST a JSON body to the api with the ingest token (when there is one) and the request timeout."""
    headers = {"Content-Type": "application/json"}
    if current := token.current():
        headers["X-AnySentry-Ingest-Token"] = current
    try:
        async with session.post(settings.ingest_url + path, data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=settings.request_timeout)) as resp:
            status = resp.status
            wait = retry_after(resp.headers.get("Retry-After"))
            raw = await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Answer(0, {}, error=f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
    try:
        answer = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        answer = {}
    return Answer(status, answer if isinstance(answer, dict) else {}, raw, wait)


class Shipper:
    def __init__(self, settings: CollectorSettings, buffer: DiskBuffer, stats: CollectorStats, token: TokenSource,
                 session: aiohttp.ClientSession):
        self.settings = settings
        self.buffer = buffer
        self.stats = stats
        self.token = token
        self.session = session
        self._last_log = 0.0

    def envelope(self, route: str) -> dict:
        """Who is sending: the fields SPEC §22.2 resolves the source from."""
        s = self.settings
        common = {"collectorId": s.collector_id, "nodeName": s.node_name}
        if s.source_id:
            common["sourceId"] = s.source_id
        if s.source_name:
            common["sourceName"] = s.source_name
        if route == "batch" and s.source_type:
            common["sourceType"] = s.source_type
        return common

    def body(self, route: str, items: list) -> bytes:
        common = self.envelope(route)
        events = [{**item, **common} for item in items] if route == "batch" else items
        return orjson.dumps({**common, "events": events})

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            self.stats.beat("shipper", 60.0)
            batch = await asyncio.to_thread(self.buffer.peek, self.settings.batch_size)
            if batch is None:
                await pause(stop, self.settings.flush_interval)
                continue
            outcome = await self.deliver(batch.route, batch.items)
            if outcome is None:
                await asyncio.to_thread(self.buffer.ack, batch.end)
                attempt = 0
                continue
            attempt += 1
            delay = outcome.after if outcome.after is not None else backoff(attempt, self.settings.max_backoff)
            self._log_retry(outcome, delay)
            deadline = time.monotonic() + delay
            while not stop.is_set() and time.monotonic() < deadline:  # stay visibly alive while waiting
                self.stats.beat("shipper", 60.0)
                await pause(stop, min(5.0, deadline - time.monotonic()))

    def _log_retry(self, outcome: Retry, delay: float) -> None:
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY:
            self._last_log = now
            log.warning("cannot deliver to %s (%s); %d items wait in the disk buffer; retrying in %.1f s",
                        self.settings.ingest_url, outcome.reason, self.buffer.pending_items, delay)

    async def deliver(self, route: str, items: list) -> Retry | None:
        """Send one batch; None when the api has answered for every item of it."""
        reply = await post(self.session, self.settings, self.token, PATHS[route], self.body(route, items))
        status, answer = reply.status, reply.body
        if not status:
            self.stats.api_failed(reply.error)
            self.stats.count("errors")
            return Retry(reply.error)
        if status in RETRY_STATUSES:
            reason = f"HTTP {status} {str(answer.get('message') or '')[:200]}".strip()
            self.stats.api_failed(reason)
            self.stats.count("errors")
            return Retry(reason, reply.retry_after)
        if 200 <= status < 300:
            outcome = self._accounted(route, answer.get("data", answer))
            if outcome is None:
                self.stats.api_ok()
            return outcome
        self.stats.api_ok()  # the api answered; it just will not take this
        message = str(answer.get("message") or reply.raw[:200].decode("utf-8", "replace"))
        if len(items) > 1:  # find the item the api refuses: halve the batch until it stands alone
            middle = len(items) // 2
            for part in (items[:middle], items[middle:]):
                outcome = await self.deliver(route, part)
                if outcome is not None:
                    return outcome
            return None
        log.warning("the api refused an item for good (HTTP %d: %s); it is not sent again", status, message)
        self.stats.count("rejected")
        return None

    def _accounted(self, route: str, data: object) -> Retry | None:
        results = data.get("items") if isinstance(data, dict) else None
        results = [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
        reasons = Counter(str(r.get("reason") or "rejected") for r in results if r.get("accepted") is not True)
        refused = next((reason for reason in reasons if reason in CREDENTIAL_REASONS), None)
        if refused:
            self.token.reload()
            self.stats.credentials_refused(refused)
            return Retry(refused)
        self.stats.token_rejected = ""
        accepted = sum(1 for r in results if r.get("accepted") is True)
        rejected = sum(reasons.values())
        self.stats.count("forwarded", accepted)
        self.stats.count("rejected", rejected)
        if rejected:
            log.warning("the api rejected %d %s items for good: %s", rejected, route,
                        ", ".join(f"{reason} ×{n}" for reason, n in reasons.most_common(5)))
        return None
