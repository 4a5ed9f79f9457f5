"""The ingest workers' process pool (`anysentry.api.worker_pool`): real spawned processes answering
over socket pairs — results and errors come back, a dead worker fails its calls instead of hanging
them, and no worker outlives the service, also when the service is killed -9."""

from __future__ import annotations

import asyncio
import math
import operator
import os
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

from anysentry.api.ingest_workers import worker_pid
from anysentry.api.worker_pool import WorkerPool


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pids: list[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


async def test_calls_answer_in_the_workers_and_errors_come_back_as_raised():
    pool = WorkerPool(2)
    await pool.start()
    try:
        pids = await asyncio.gather(*(pool.call(worker_pid, None) for _ in range(4)))
        assert set(pids) == set(pool.pids) and os.getpid() not in pids  # both workers took calls
        big = list(range(200_000))  # larger than one socket read: answers are reassembled
        assert await pool.call(operator.neg, 7) == -7
        assert await pool.call(sorted, big) == big
        with pytest.raises(ValueError):
            await pool.call(math.sqrt, -1)
        assert await pool.call(operator.neg, 8) == -8  # an error does not break the pool
    finally:
        pool.close()
    assert _gone(pids)


async def test_frames_larger_than_the_sockets_hold_keep_their_order():
    pool = WorkerPool(1)
    await pool.start()
    try:
        sizes = await asyncio.gather(pool.call(len, b"x" * (10 << 20)), pool.call(operator.neg, 1),
                                     pool.call(len, b"y" * (5 << 20)), pool.call(operator.neg, 2))
        assert sizes == [10 << 20, -1, 5 << 20, -2]
    finally:
        pool.close()


async def test_answers_of_every_size_in_a_row_come_back_whole_and_in_order():
    """Answers are read into one reused buffer: a small one after a large one, one larger than the
    buffer kept between answers, and answers queued back to back must each come back exactly."""
    pool = WorkerPool(1)
    await pool.start()
    try:
        sizes = [3 << 20, 10, 6 << 20, 1 << 10, 2 << 20]
        answers = await asyncio.gather(*(pool.call(bytes.upper, b"ab" * (n // 2) + bytes([97 + i]))
                                         for i, n in enumerate(sizes)))
        assert answers == [b"AB" * (n // 2) + bytes([65 + i]) for i, n in enumerate(sizes)]
        assert await pool.call(operator.neg, 3) == -3
    finally:
        pool.close()


async def test_a_killed_worker_fails_its_calls_and_breaks_the_pool():
    pool = WorkerPool(1)
    await pool.start()
    try:
        slow = asyncio.ensure_future(pool.call(time.sleep, 30))
        await asyncio.sleep(0.3)
        os.kill(pool.pids[0], signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            await asyncio.wait_for(slow, 10)
        with pytest.raises(BrokenProcessPool):
            await pool.call(operator.neg, 1)
        assert pool.broken is not None
    finally:
        pool.close()


async def test_closing_the_pool_fails_outstanding_calls_and_ends_the_workers():
    pool = WorkerPool(2)
    await pool.start()
    pids = pool.pids
    waiting = asyncio.ensure_future(pool.call(time.sleep, 30))
    await asyncio.sleep(0.2)
    pool.close()
    with pytest.raises(BrokenProcessPool):
        await asyncio.wait_for(waiting, 5)
    assert _gone(pids, within=40)  # the sleeping one ends when its call does, or is killed


SERVICE = """
import asyncio, sys, time
from anysentry.api.worker_pool import WorkerPool
from anysentry.api.ingest_workers import worker_pid

async def main():
    pool = WorkerPool(2)
    await pool.start()
    await asyncio.gather(*(pool.call(worker_pid, None) for _ in range(2)))
    print(" ".join(map(str, pool.pids)), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_no_worker_outlives_a_service_killed_minus_9():
    service = subprocess.Popen([sys.executable, "-c", SERVICE], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in service.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    finally:
        service.send_signal(signal.SIGKILL)
        service.wait()
    assert _gone(pids)


def test_a_frame_the_socket_takes_in_parts_arrives_whole():
    """A worker's answer larger than the socket takes at once (here a 4 KB send buffer in timeout
    mode, where a send returns after a part) is finished where the first send stopped."""
    import socket
    import threading

    from anysentry.api.worker_pool import _send_frame

    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.settimeout(10)
        frames = [bytes(range(256)) * 4000, b"second"]
        received = bytearray()
        expected = sum(8 + len(frame) for frame in frames)

        def read() -> None:
            while len(received) < expected:
                received.extend(theirs.recv(65536))

        reader = threading.Thread(target=read)
        reader.start()
        for frame in frames:
            _send_frame(ours, frame)
        reader.join(10)
        assert not reader.is_alive()
    first = int.from_bytes(received[:8], "little")
    assert first == len(frames[0]) and bytes(received[8:8 + first]) == frames[0]
    assert bytes(received[8 + first:]) == len(frames[1]).to_bytes(8, "little") + frames[1]
