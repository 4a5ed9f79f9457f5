"""Ingest workers: large producer batches normalised, judged and serialised in other processes.

The service's event loop runs on one core, and at batch rates normalising, judging and serialising
are most of its work (bench/ingest.py). So a batch of at least `min_items` items is handed to a pool
of worker processes that run the very same `judge_item` as the loop, and hand back only what the
loop needs: the WAL payload of the events that just need storing (final allow decisions) as bytes
with their counts, and their answers serialised too; every other event as an object (it may go to
L2/L3 and into incidents); heartbeats and rejections. Moving objects between processes costs more
than serialising them where they are made. Everything stateful — sources, the WAL, tiers, books —
stays in the loop's process, which also keeps batches needing its identity state (pod identities,
human reviews). A pool that fails (a worker died) is rebuilt, and that batch is judged in the loop:
nothing is lost, nothing is judged twice.

`ANYSENTRY_INGEST_WORKERS` sets the pool size of `anysentry api`/`serve` (0 turns it off); the default
is one worker per usable core (CPU affinity and a container's CPU limit), at most four, and none on a
single core. The workers start with the first large batch, in the background: until they are up,
batches are judged in the service."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from anysentry.api.pipeline import AnswerRun, PlainEvents, event_answer, judge_item, rejection_answer
from anysentry.api.worker_pool import WorkerPool
from anysentry.events.model import Heartbeat, Observation, SourceContext
from anysentry.judge.engine import Judge
from anysentry.store import event_rows

log = logging.getLogger(__name__)

WORKERS_ENV = "ANYSENTRY_INGEST_WORKERS"  # read by ApiSettings.from_env
MIN_ITEMS = 64  # below this a round trip to a worker costs more than it saves
MAX_DEFAULT_WORKERS = 4
MAX_FAILURES = 3
_JUDGE_CACHE = 8


def default_size() -> int:
    """One worker per core this process may use, at most four; none with a single core (the loop
    would only compete with it)."""
    cores = usable_cores()
    return 0 if cores < 2 else min(cores, MAX_DEFAULT_WORKERS)


def usable_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores of the CPU affinity, fewer when a cgroup v2 CPU limit (a container's `limits.cpu`) is lower."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


@dataclass(frozen=True, slots=True)
class JudgeSpec:
    """What rebuilds the loop's current Judge in a worker (compiled once per worker and version)."""

    policy: dict
    version: str
    deeper_tiers: frozenset
    l3_bin: str

    @classmethod
    def of(cls, judge: Judge) -> "JudgeSpec":
        return cls(judge.policy, judge.version, judge.deeper_tiers, judge.l3_bin)


@dataclass(slots=True)
class Job:
    items: list
    spec: JudgeSpec
    context: SourceContext | None
    default_source: str
    now: int | None


@dataclass(slots=True)
class Judged:
    """A worker's answer, in item order: an `AnswerRun` for consecutive final allow events (already
    serialised), `(index, Observation)` for an event the loop keeps as an object (its answer is
    written after the tiers have seen it), or the answer dict of a heartbeat or a rejection."""

    answers: list
    plain: PlainEvents | None
    heartbeats: list
    rejections: dict
    seconds: float


_judges: dict[tuple, Judge] = {}  # per worker process


def _judge_for(spec: JudgeSpec) -> Judge:
    key = (spec.version, spec.deeper_tiers, spec.l3_bin)
    judge = _judges.get(key)
    if judge is None:
        if len(_judges) >= _JUDGE_CACHE:
            _judges.clear()
        judge = _judges[key] = Judge(spec.policy, deeper_tiers=spec.deeper_tiers, l3_bin=spec.l3_bin)
    return judge


def judge_batch(job: Job) -> Judged:
    """In a worker: every item of a batch through `judge_item`, split into what the loop needs."""
    judge = _judge_for(job.spec)
    started = time.perf_counter()
    source_id = job.context.sourceId if job.context is not None else None
    answers: list = []
    run: list = []  # consecutive answers of final allow events, serialised together
    plain: list = []
    heartbeats: list = []
    rejections: dict[str, int] = {}
    last_at = 0
    for index, item in enumerate(job.items):
        result = judge_item(item, judge, context=job.context, default_source=job.default_source, now=job.now)
        if isinstance(result, Observation):
            event = result.event
            if event.verdict == "allow" and event.decisionStatus == "succeeded":
                plain.append(event)
                run.append(event_answer(event, index))
                last_at = max(last_at, event.at)
                continue
            answer: object = (index, result)
        elif isinstance(result, Heartbeat):
            heartbeats.append((index, result.payload))
            answer = {"index": index}  # filled in once recorded
        else:
            rejections[result.reason] = rejections.get(result.reason, 0) + 1
            answer = rejection_answer(index, result.reason, source_id)
        if run:
            answers.append(AnswerRun.of(run))
            run = []
        answers.append(answer)
    if run:
        answers.append(AnswerRun.of(run))
    events = PlainEvents(event_rows.payload(plain), len(plain), last_at) if plain else None
    return Judged(answers, events, heartbeats, rejections, time.perf_counter() - started)


def worker_pid(_: object) -> int:
    """In a worker: its pid, the answer that shows it is up."""
    return os.getpid()


class IngestWorkers:
    """The pool of worker processes (spawned: the service's threads are never forked). Nothing starts
    until a batch could use it: a service that never gets one (small requests only, or pod identity
    in a cluster) spends no memory on workers."""

    def __init__(self, size: int, *, min_items: int = MIN_ITEMS):
        self.size = size
        self.min_items = min_items
        self.failures = 0  # in a row
        self._pool: WorkerPool | None = None
        self._ready = False
        self._starting: asyncio.Task | None = None

    def available(self) -> bool:
        """Whether the workers can take a batch now. The first call starts them in the background
        (imports take a moment): until they are up, batches are judged in the service."""
        if self._ready or not self.size:
            return self._ready
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.start())
        return False

    async def start(self) -> bool:
        """Start every worker and wait until each has answered once; False when they cannot start."""
        if self._pool is None:
            self._pool = WorkerPool(self.size)
        pool = self._pool
        try:
            await pool.start()
            await asyncio.gather(*(pool.call(worker_pid, None) for _ in range(self.size)))
        except Exception as exc:  # noqa: BLE001 - whatever stops them, the service judges batches itself
            if self._pool is pool:
                self._failed(exc)
            return False
        finally:
            self._starting = None
        self._ready = self._pool is pool
        return self._ready

    async def judge(self, items: list, judge: Judge, *, context: SourceContext | None, default_source: str,
                    now: int | None) -> Judged | None:
        """The batch judged by a worker, or None when the pool failed (it restarts with a later batch)."""
        job = Job(items, JudgeSpec.of(judge), context, default_source, now)
        pool = self._pool
        if pool is None:  # discarded since the batch was given to the workers
            return None
        try:
            judged = await pool.call(judge_batch, job)
        except (BrokenProcessPool, OSError) as exc:
            if self._pool is pool:  # one failure however many batches it held
                self._failed(exc)
            return None
        self.failures = 0
        return judged

    def _failed(self, exc: BaseException) -> None:
        """A broken pool is dropped and started again by a later batch; after `MAX_FAILURES` in a
        row the service stops trying and judges every batch itself."""
        self.failures += 1
        self._discard()
        if self.failures >= MAX_FAILURES:
            log.error("ingest workers failed %d times in a row (%s): judging every batch in the service", self.failures, exc)
            self.size = 0
        else:
            log.warning("ingest worker pool failed (%s): batches are judged in the service until it is back", exc)

    def _discard(self) -> None:
        pool, self._pool, self._ready = self._pool, None, False
        if pool is not None:
            pool.close()

    def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
        self._discard()
