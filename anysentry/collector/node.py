"""The node collector put together: the procfs observer and the followed files write into the disk
buffer, the shipper empties it into the api, heartbeats and the health endpoint report on all of it.

Source event ids: every forwarded line carries `ose_` + sha256(node, instance, seq, line)[:24] —
instance being the host boot (procfs) or the file's device:inode, seq what the process or line is
(pid, start time and event; byte offset) — so a line sent twice after a crash, a restart or a new
collector pod on the same node is upserted by the api, not stored twice (SPEC §4.2). The pod name
is left out on purpose: a replaced DaemonSet pod re-reads the same node."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from anysentry.collector.buffer import BufferLocked, DiskBuffer
from anysentry.collector.health import health_app
from anysentry.collector.heartbeat import Heartbeater
from anysentry.collector.observer import ObserverSettings, ProcObserver
from anysentry.collector.settings import CollectorSettings, SettingsError, TokenSource
from anysentry.collector.shipper import Shipper, pause
from anysentry.collector.stats import CollectorStats
from anysentry.collector.tail import Line, OffsetBook, Tailer

log = logging.getLogger(__name__)

ROUTE_KINDS = {"falco": "FalcoAlert", "tetragon": "TetragonEvent"}
MAX_UNBUFFERED = 10_000  # observations held in memory while the disk refuses writes
SHUTDOWN_GRACE = 10.0


def source_event_id(*parts: str) -> str:
    return "ose_" + hashlib.sha256("".join(f"{p}\0" for p in parts).encode("utf-8", "replace")).hexdigest()[:24]


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _observer_kind(line: bytes) -> str | None:
    try:
        record = orjson.loads(line)
        event = record.get("event") if isinstance(record, dict) else None
        return next(iter(event)) if isinstance(event, dict) and event else None
    except (orjson.JSONDecodeError, TypeError):
        return None


class NodeCollector:
    def __init__(self, settings: CollectorSettings, *, stdin=None):
        self.settings = settings
        self.stats = CollectorStats(degraded_after=settings.degraded_after)
        self.token = TokenSource(settings.token_file, settings.token_env)
        self._stdin = stdin
        self._tasks: dict[str, asyncio.Task] = {}
        self._unbuffered: list[dict] = []
        self.health_port: int | None = None  # the bound port, once running
        self.buffer: DiskBuffer | None = None
        self.observer: ProcObserver | None = None
        self.ready = asyncio.Event()

    # -- setup ----------------------------------------------------------------------------------

    def _open_buffer(self) -> DiskBuffer:
        directory = Path(self.settings.buffer_dir)
        try:
            return DiskBuffer(directory / "queue", self.settings.buffer_max_bytes)
        except BufferLocked as exc:
            raise SettingsError(str(exc)) from None
        except OSError as exc:
            raise SettingsError(f"cannot use buffer directory {directory}: {exc.strerror or exc}; "
                                "point --buffer-dir at a writable directory") from None

    def _observer(self) -> ProcObserver | None:
        s = self.settings
        if not s.procfs:
            return None
        if not os.path.isdir(s.host_proc) or not os.access(s.host_proc, os.R_OK | os.X_OK):
            raise SettingsError(f"proc directory {s.host_proc} is not readable (set --host-proc, or --no-procfs)")
        return ProcObserver(ObserverSettings(proc=s.host_proc, agent_pattern=s.agent_pattern,
                                             all_processes=s.all_processes, exclude_pids=frozenset({os.getpid()}),
                                             host_id=s.node_name))

    # -- loops ----------------------------------------------------------------------------------

    async def _append(self, route: str, items: list) -> None:
        """Buffer `items` as records of at most batch_size items, with one write and one fdatasync."""
        if items:
            chunks = list(_chunks(items, self.settings.batch_size))
            self.stats.count("dropped", await asyncio.to_thread(self.buffer.append_many, route, chunks))

    async def _observe(self, stop: asyncio.Event) -> None:
        node, interval = self.settings.node_name, self.settings.interval
        while not stop.is_set():
            self.stats.beat("procfs", interval * 10 + 30)
            try:
                observations = await asyncio.to_thread(self.observer.poll)
            except Exception:  # noqa: BLE001 - a bug reading one odd process must not end observation
                log.exception("procfs poll failed")
                self.stats.count("errors")
                observations = []
            for obs in observations:
                self.stats.observed(obs.kind)
            self._unbuffered += [{"line": o.line, "at": o.at,
                                  "sourceEventId": source_event_id(node, self.observer.instance, o.key)}
                                 for o in observations]
            if self._unbuffered:
                try:
                    await self._append("batch", self._unbuffered)
                    self._unbuffered = []
                except OSError as exc:
                    self.stats.count("errors")
                    overflow = max(0, len(self._unbuffered) - MAX_UNBUFFERED)
                    log.error("cannot write the disk buffer (%s); holding %d observations in memory%s", exc,
                              len(self._unbuffered) - overflow, f", dropped {overflow}" if overflow else "")
                    self.stats.count("dropped", overflow)
                    self._unbuffered = self._unbuffered[overflow:]
            await pause(stop, interval)

    def _items(self, route: str, lines: list[Line], now: int) -> list:
        node = self.settings.node_name
        items: list = []
        for line in lines:
            if route == "batch":
                text = line.data.decode("utf-8", "replace").rstrip("\r")
                self.stats.observed(_observer_kind(line.data))
                items.append({"line": text, "at": now,
                              "sourceEventId": source_event_id(node, line.instance, str(line.seq), text)})
                continue
            try:
                record = orjson.loads(line.data)
            except orjson.JSONDecodeError as exc:
                record, error = None, str(exc)
            else:
                error = "" if isinstance(record, dict) else "not a JSON object"
            if error:
                self.stats.count("rejected")
                log.warning("skipping a %s line that is not a JSON object (%s at %s)", route, error[:120], line.instance)
                continue
            self.stats.observed(ROUTE_KINDS[route])
            items.append(record)
        return items

    async def _follow(self, stop: asyncio.Event, tailer: Tailer) -> None:
        while not stop.is_set():
            self.stats.beat("tail", 120.0)
            try:
                polled = await asyncio.to_thread(tailer.poll)
                now = int(time.time() * 1000)
                for route, tail, lines, offset in polled:
                    await self._append(route, self._items(route, lines, now))
                    tail.commit(offset)  # only once its lines are on disk
                await asyncio.to_thread(tailer.save)
                self.stats.count("rejected", tailer.take_oversized())
            except Exception:  # noqa: BLE001 - the lines stay in their files; the next poll tries again
                self.stats.count("errors")
                log.exception("following input files failed; trying again")
            await pause(stop, self.settings.flush_interval)

    def dead_loops(self) -> list[str]:
        return [name for name, task in self._tasks.items() if task.done()]

    # -- running --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set. Raises SettingsError (before anything runs) for unusable settings."""
        s = self.settings
        self.observer = self._observer()
        self.buffer = self._open_buffer()
        tailer = Tailer(s.inputs, OffsetBook(Path(s.buffer_dir) / "offsets.json"), self._stdin) if s.inputs else None
        session = aiohttp.ClientSession()
        runner = None
        try:
            if s.health:
                runner = web.AppRunner(health_app(s, self.stats, self.buffer, self.dead_loops), access_log=None)
                await runner.setup()
                site = web.TCPSite(runner, s.health_host, s.health_port)
                try:
                    await site.start()
                except OSError as exc:
                    raise SettingsError(f"cannot listen on {s.health_host}:{s.health_port} for /healthz: {exc.strerror or exc}") from None
                self.health_port = site._server.sockets[0].getsockname()[1]
            shipper = Shipper(s, self.buffer, self.stats, self.token, session)
            beats = Heartbeater(s, self.stats, self.token, session, self.buffer,
                                self.observer.observed_agents if self.observer else (lambda: 0))
            loops = {"shipper": shipper.run(stop), "heartbeat": beats.run(stop)}
            if self.observer:
                loops["procfs"] = self._observe(stop)
            if tailer:
                loops["tail"] = self._follow(stop, tailer)
            self._tasks = {name: asyncio.create_task(self._supervised(name, loop), name=name)
                           for name, loop in loops.items()}
            log.info("collector %s on node %s: %s → %s (buffer %s, /healthz %s)", s.collector_id, s.node_name,
                     ", ".join(s.features), s.ingest_url, s.buffer_dir,
                     f"on {s.health_host}:{self.health_port}" if self.health_port else "off")
            self.ready.set()
            await stop.wait()
            # a request in flight may take up to its timeout: give the loops a moment, then cut them
            # off (an unacknowledged batch stays in the buffer and is sent again next time)
            await asyncio.wait(list(self._tasks.values()), timeout=SHUTDOWN_GRACE)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            if tailer:
                tailer.close()
            await session.close()
            if runner is not None:
                await runner.cleanup()
            self.buffer.close()

    async def _supervised(self, name: str, loop) -> None:
        try:
            await loop
        except Exception:
            log.exception("the %s loop stopped on an unexpected error; /healthz now answers 503", name)
            raise
