"""The embedded engine's threads yield the cores to the service's own (Linux).

chdb runs inserts, merges and queries on its own thread pools inside the service process. On a small
machine its periodic insert or a background merge took a core from the event loop for tens of
milliseconds, and every request on the loop waited with it (the runtime guard's p99). Threads that
Python did not start get a higher nice value: they still use every idle cycle, but a ready service
thread runs first. Under CPU saturation the store falls behind first; the durable buffer absorbs
that and answers 503 when it is full, as it would anyway. `ANYSENTRY_ENGINE_NICE=0` turns this off."""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

RECHECK_SECS = 2.0  # the engine's pools start threads as they grow
_TASKS = "/proc/self/task"

_lock = threading.Lock()
_watching = False


def keep_low(nice: int) -> bool:
    """Lower the engine's threads from now on (a watcher thread; once per process). False where
    this cannot work (not Linux) or is turned off (`nice` 0)."""
    global _watching
    if nice <= 0 or not hasattr(os, "setpriority") or not os.path.isdir(_TASKS):
        return False
    with _lock:
        if not _watching:
            _watching = True
            threading.Thread(target=_watch, args=(nice,), name="anysentry-engine-nice",
                             daemon=True).start()
    return True


def lower_this_thread(nice: int) -> None:
    """For a thread of ours that mostly waits on the engine (the event writer's): the engine runs a
    one-thread insert on its caller's thread."""
    if nice > 0 and hasattr(os, "setpriority") and not _lower(threading.get_native_id(), nice):
        log.warning("cannot lower the priority of the store writer thread")


def _watch(nice: int) -> None:
    candidates: set[int] = set()
    while True:
        try:
            candidates = lower(nice, candidates)
        except OSError:
            log.warning("cannot read this process's threads: the store engine keeps normal priority")
            return
        time.sleep(RECHECK_SECS)


def lower(nice: int, candidates: set[int]) -> set[int]:
    """One pass: give `nice` to the non-Python threads that were already non-Python threads in the
    previous pass (`candidates`) — a thread Python is just starting is briefly unregistered, and
    must keep its priority. Returns this pass's non-Python threads, the next pass's candidates."""
    python = {thread.native_id for thread in threading.enumerate()}
    others = {int(name) for name in os.listdir(_TASKS)} - python
    for tid in others & candidates:
        _lower(tid, nice)
    return others


def _lower(tid: int, nice: int) -> bool:
    """Raise one thread's nice value to `nice` (never lowers it); False when it is gone or refused."""
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:
        return False
    return True
