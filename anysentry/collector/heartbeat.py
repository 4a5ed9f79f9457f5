"""Heartbeats (SPEC §23.1): POST /collectors/heartbeat every interval, so collectors/health can tell
a quiet node from a dead one. Heartbeats are live signals, not data: they skip the disk buffer, and
a heartbeat the api did not take leaves its interval counters to the next one."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

import aiohttp
import orjson

from anysentry import __version__
from anysentry.collector.buffer import DiskBuffer
from anysentry.collector.settings import CollectorSettings, TokenSource
from anysentry.collector.shipper import CREDENTIAL_REASONS, pause, post
from anysentry.collector.stats import CollectorStats

log = logging.getLogger(__name__)


class Heartbeater:
    def __init__(self, settings: CollectorSettings, stats: CollectorStats, token: TokenSource,
                 session: aiohttp.ClientSession, buffer: DiskBuffer, observed_agents: Callable[[], int]):
        self.settings = settings
        self.stats = stats
        self.token = token
        self.session = session
        self.buffer = buffer
        self.observed_agents = observed_agents

    def body(self) -> tuple[dict, Counter, int, int]:
        """The heartbeat, and the interval counters it carries (taken off once it is accepted)."""
        s, stats = self.settings, self.stats
        kinds, dropped, errors = Counter(stats.kinds), stats.dropped, stats.errors
        status, message = stats.status()
        body = {
            "collectorId": s.collector_id, "sourceType": s.source_type, "nodeName": s.node_name,
            "namespace": s.namespace, "podName": s.pod_name, "version": __version__, "mode": s.mode,
            "status": status, "message": message, "attachedProbes": 0, "enabledFeatures": s.features,
            "intervalSecs": s.heartbeat_interval, "eventKindCounts": dict(kinds),
            "queueDepth": self.buffer.pending_items, "droppedEvents": dropped, "outputDropped": 0,
            "errorCount": errors, "observedAgents": self.observed_agents(),
            "filterMetrics": {**stats.counts(), "bufferedItems": self.buffer.pending_items,
                              "bufferedBytes": self.buffer.pending_bytes},
        }
        for key, value in (("sourceId", s.source_id), ("sourceName", s.source_name)):
            if value:
                body[key] = value
        return body, kinds, dropped, errors

    async def send(self) -> bool:
        body, kinds, dropped, errors = self.body()
        reply = await post(self.session, self.settings, self.token, "/collectors/heartbeat", orjson.dumps(body))
        if not reply.status:
            self.stats.api_failed(reply.error)
            return False
        if not 200 <= reply.status < 300:
            self.stats.api_failed(f"heartbeat answered HTTP {reply.status}")
            return False
        data = reply.body.get("data", reply.body)
        if isinstance(data, dict) and data.get("accepted") is False:
            reason = str(data.get("reason") or "rejected")
            if reason in CREDENTIAL_REASONS:
                self.token.reload()
                self.stats.credentials_refused(reason)
            log.warning("heartbeat not accepted: %s", reason)
            return False
        self.stats.heartbeat_sent(kinds, dropped, errors)
        self.stats.token_rejected = ""
        self.stats.api_ok()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.heartbeat_interval
        while not stop.is_set():
            self.stats.beat("heartbeat", interval * 3 + self.settings.request_timeout)
            await self.send()
            await pause(stop, interval)
