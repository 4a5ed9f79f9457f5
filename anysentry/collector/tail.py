"""Following NDJSON files (a3s-observer output, Falco and Tetragon JSON exports) as they grow.

A file is followed by identity (device, inode), not by name: appends are read as they come,
rotation (the name now points at a new file) finishes the old file first — a last line without a
newline included — then starts the new one at 0, truncation (copytruncate) starts over at 0. Offsets
live in `offsets.json` in the buffer directory, written after the lines are in the disk buffer, so a
restart resumes where the buffer ends; a line read twice after a crash gets the same source event id
and the api upserts it. A reused inode is told apart by the fingerprint of the file's first bytes.
`-` reads standard input."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

MAX_LINE = 1024 * 1024  # longer lines are skipped (counted as rejected)
READ_CHUNK = 4 * MAX_LINE
_HEAD = 64  # bytes fingerprinted to recognise a file behind a reused inode


@dataclass(frozen=True, slots=True)
class Line:
    data: bytes
    instance: str  # the file (or stdin run) it came from
    seq: int  # byte offset in the file, or line number on stdin


class OffsetBook:
    """Where each followed file was read up to, keyed by `dev:ino`; saved atomically."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.entries: dict[str, dict] = orjson.loads(self.path.read_bytes())
            if not isinstance(self.entries, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            self.entries = {}
        except (ValueError, TypeError) as exc:
            log.warning("unreadable %s (%s): following every file from its start", self.path, exc)
            self.entries = {}
        self.dirty = False

    def save(self, live: set[str]) -> None:
        """Persist the entries of the files still followed (`live` keys)."""
        self.entries = {k: v for k, v in self.entries.items() if k in live}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(orjson.dumps(self.entries))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self.dirty = False


def _fingerprint(handle, length: int) -> str:
    handle.seek(0)
    return hashlib.sha256(handle.read(length)).hexdigest()[:16]


class FileTail:
    """One followed path. `read()` returns new complete lines and the offset they end at;
    `commit(offset)` once they are safely buffered."""

    def __init__(self, path: str, book: OffsetBook):
        self.path = path
        self.book = book
        self.handle = None
        self.key = ""
        self.offset = 0
        self.skipping = False  # inside a line longer than MAX_LINE
        self.oversized = 0
        self.gone = False
        self._switch = False
        self._head = ""  # fingerprint of the first _HEAD bytes, kept once the offset is past them

    def _open(self) -> bool:
        try:
            handle = open(self.path, "rb")
        except OSError:
            return False
        st = os.fstat(handle.fileno())
        self.handle, self.key, self.offset, self.skipping = handle, f"{st.st_dev}:{st.st_ino}", 0, False
        self._head = ""
        entry = self.book.entries.get(self.key)
        if entry:
            head_len = min(int(entry.get("headLen", 0)), st.st_size)
            if head_len == entry.get("headLen") and _fingerprint(handle, head_len) == entry.get("head") \
                    and int(entry.get("offset", 0)) <= st.st_size:
                self.offset = int(entry["offset"])
        return True

    def read(self) -> tuple[list[Line], int]:
        if self.handle is None and not self._open():
            return [], 0
        self.handle.seek(self.offset)
        data = self.handle.read(READ_CHUNK)
        lines: list[Line] = []
        position = self.offset
        start = 0
        if self.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return [], position + len(data)
            self.skipping, start = False, newline + 1
        last = data.rfind(b"\n")
        while start <= last:
            end = data.index(b"\n", start)
            if end - start > MAX_LINE:
                self.oversized += 1
            elif end > start:
                lines.append(Line(data[start:end], self.key, position + start))
            start = end + 1
        rest = len(data) - start
        if rest > MAX_LINE:  # a line too long to keep: skip to its end
            self.oversized += 1
            self.skipping = True
            return lines, position + len(data)
        if len(data) < READ_CHUNK:  # at the end of this file: has the name moved on?
            try:
                st = os.stat(self.path)
                moved = f"{st.st_dev}:{st.st_ino}" != self.key
            except OSError:
                st, moved = None, False
                self.gone = not lines and not rest
            if moved:
                if rest:  # the old file will not grow any more: its last line is complete
                    lines.append(Line(data[start:], self.key, position + start))
                    start = len(data)
                self._switch = True
            elif st is not None and st.st_size < position + start:
                log.info("%s was truncated: reading it again from the start", self.path)
                self._head = ""
                return lines, 0
        return lines, position + start

    def commit(self, offset: int) -> None:
        if offset == self.offset and not self._switch:
            return
        self.offset = offset
        head_len = min(_HEAD, offset)
        if self.handle is not None:
            head = self._head if head_len == _HEAD else ""
            if not head:
                head = _fingerprint(self.handle, head_len)
                self._head = head if head_len == _HEAD else ""  # once complete, the head no longer changes
            self.book.entries[self.key] = {"path": self.path, "offset": offset, "headLen": head_len, "head": head}
            self.book.dirty = True
        if self._switch:
            log.info("%s was rotated: following the new file", self.path)
            self.close()
            self._switch = False

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class StdinTail:
    """Standard input, read by a thread (a pipe cannot be polled like a file)."""

    path = "-"

    def __init__(self, stream=None):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stream = stream or sys.stdin.buffer
        self.key = f"stdin:{time.time_ns()}"
        self.oversized = 0
        self.gone = False
        self._count = 0
        threading.Thread(target=self._pump, name="stdin-reader", daemon=True).start()

    def _pump(self) -> None:
        for raw in iter(self._stream.readline, b""):
            self._queue.put(raw)

    def read(self) -> tuple[list[Line], int]:
        lines = []
        while len(lines) < 10_000:
            try:
                raw = self._queue.get_nowait()
            except queue.Empty:
                break
            self._count += 1
            raw = raw.rstrip(b"\r\n")
            if len(raw) > MAX_LINE:
                self.oversized += 1
            elif raw:
                lines.append(Line(raw, self.key, self._count))
        return lines, self._count

    def commit(self, offset: int) -> None:
        pass

    def close(self) -> None:
        pass


class Tailer:
    """Every file matching the configured paths/globs, per route; new matches are picked up."""

    def __init__(self, inputs: list[tuple[str, str]], book: OffsetBook, stdin=None):
        self.inputs = inputs  # (route, path or glob or "-")
        self.book = book
        self.tails: dict[tuple[str, str], FileTail | StdinTail] = {}
        for route, pattern in inputs:
            if pattern == "-":
                self.tails[(route, "-")] = StdinTail(stdin)

    def poll(self) -> list[tuple[str, FileTail | StdinTail, list[Line], int]]:
        for route, pattern in self.inputs:
            if pattern == "-":
                continue
            paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for path in paths:
                if (route, path) not in self.tails and os.path.isfile(path):
                    self.tails[(route, path)] = FileTail(path, self.book)
        out = []
        for (route, path), tail in list(self.tails.items()):
            lines, offset = tail.read()
            if tail.gone and not lines:
                tail.close()
                del self.tails[(route, path)]
                continue
            out.append((route, tail, lines, offset))
        return out

    def take_oversized(self) -> int:
        count = 0
        for tail in self.tails.values():
            count, tail.oversized = count + tail.oversized, 0
        return count

    def save(self) -> None:
        if self.book.dirty:
            self.book.save({tail.key for tail in self.tails.values() if isinstance(tail, FileTail) and tail.key})

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()
