"""The durable local buffer (DESIGN §2): an append-only log of event batches on local disk.

An ingest request is answered `accepted: true` only after its batch is in this log and fsynced, so
an acknowledged event survives a crash or a store outage. The writer replays what the store has not
acknowledged yet; a full log refuses new batches (`BufferFull` → 503) rather than dropping any.

Layout: segment files `wal-<base>.log` (base = global byte position of the segment's first byte),
each a run of records `<length u32><count u32><crc32 u32><payload>`, where the payload is one
batch's events as `event_rows` (an orjson array of objects before them: still read) and the crc covers
count and payload. A position is the global byte
offset just after a record. `checkpoint` holds the acknowledged position, replaced atomically.

The log itself treats payloads as opaque bytes (`payloads()`): the node collector's disk buffer
(collector/buffer.py) is this same log under other file names, with its own payloads, and a
drop-oldest policy instead of refusing (`release_oldest`).

Group commit: `append_many` writes several records with one `write` and one `fdatasync`, so
concurrent producers share the cost of the flush; each record still gets its own answer (its
position, or the reason it was refused) and none is answered before it is on disk."""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

try:  # ISA-L's CRC-32: zlib's checksum (the same values) at ~5× its speed on a batch just received
    from isal.isal_zlib import crc32
except ImportError:  # a platform without its wheels
    from zlib import crc32

from anysentry.events.model import AgentEvent
from anysentry.store import event_rows

log = logging.getLogger(__name__)

HEADER = struct.Struct("<III")
SEGMENT_BYTES = 16 * 1024 * 1024
MAX_RECORD_BYTES = 1 << 30
_SEGMENT_PREFIX, _SEGMENT_SUFFIX = "wal-", ".log"
_CHECKPOINT = "checkpoint"


class BufferFull(Exception):
    """Appending would exceed the buffer's byte limit; the caller answers 503 and the producer retries."""


class WalLocked(RuntimeError):
    """Another process already owns this log directory."""


@dataclass(slots=True)
class _Record:
    base: int  # segment base
    offset: int  # record start within the segment file
    size: int  # framed size (header + payload)
    count: int

    @property
    def end(self) -> int:
        return self.base + self.offset + self.size


@dataclass(slots=True)
class WalBatch:
    position: int  # acknowledge this to release the batch
    events: list[AgentEvent]


def _crc(count: int, payload: bytes) -> int:
    return crc32(payload, crc32(count.to_bytes(4, "little")))


def header(payload: bytes, count: int) -> bytes:
    """The record header of an already serialised batch payload."""
    return HEADER.pack(len(payload), count, _crc(count, payload))


def frame(events: list) -> tuple[bytes, int]:
    """One record: header + orjson payload of the batch (AgentEvent or plain dicts)."""
    payload = orjson.dumps(events)
    count = len(events)
    return header(payload, count) + payload, count


_IOV_MAX = 512  # buffers per writev call (Linux allows 1024)


def write_all(fd: int, buffers: list) -> None:
    """Write every buffer in order (short writes resumed)."""
    for start in range(0, len(buffers), _IOV_MAX):
        chunk = [memoryview(b) for b in buffers[start : start + _IOV_MAX]]
        while chunk:
            written = os.writev(fd, chunk)
            while chunk and written >= len(chunk[0]):
                written -= len(chunk[0])
                chunk.pop(0)
            if written:
                chunk[0] = chunk[0][written:]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(path: Path, base: int) -> tuple[list[_Record], int, bool]:
    """Valid records of a segment, the byte length they cover, and whether garbage follows them.

    A torn or corrupt record (length past the end, bad crc) ends the scan: nothing after it is
    trusted, and nothing there was ever acknowledged to a producer."""
    records: list[_Record] = []
    data = path.read_bytes()
    offset, size = 0, len(data)
    while offset + HEADER.size <= size:
        length, count, crc = HEADER.unpack_from(data, offset)
        start, end = offset + HEADER.size, offset + HEADER.size + length
        if length == 0 or length > MAX_RECORD_BYTES or end > size:
            break
        if _crc(count, data[start:end]) != crc:
            break
        records.append(_Record(base, offset, end - offset, count))
        offset = end
    return records, offset, offset != size


def _checked(data: bytes, position: int) -> bytes | None:
    """A framed record's payload, or None (logged) if it was damaged on disk since it was written."""
    try:
        length, count, crc = HEADER.unpack_from(data)
        payload = data[HEADER.size :]
        if len(payload) != length or _crc(count, payload) != crc:
            raise ValueError("length or crc mismatch")
        return payload
    except Exception as error:  # noqa: BLE001 - a bad record must not stop the reader
        log.error("WAL: unreadable record ending at %d (%s); skipping it", position, error)
        return None


def decode(payload: bytes | None, position: int) -> list[AgentEvent]:
    """A record's events; a damaged record decodes as empty (logged), so replay moves past it
    instead of stalling on it forever."""
    if payload is None:
        return []
    try:
        return event_rows.decode(payload)
    except Exception as error:  # noqa: BLE001 - a bad record must not stop the reader
        log.error("WAL: unreadable record ending at %d (%s); skipping it", position, error)
        return []


class WriteAheadLog:
    """Segmented, fsynced, checkpointed log of event batches. Thread-safe; one owner process.

    `prefix`, `checkpoint_name` and `file_mode` name and protect the files (segments, checkpoint,
    LOCK) for logs other than the api's."""

    def __init__(
        self,
        directory: str | os.PathLike,
        max_bytes: int,
        segment_bytes: int = SEGMENT_BYTES,
        *,
        prefix: str = _SEGMENT_PREFIX,
        checkpoint_name: str = _CHECKPOINT,
        file_mode: int = 0o644,
    ):
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes)
        self._prefix, self._checkpoint_name, self._mode = prefix, checkpoint_name, file_mode
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._ack_lock = threading.Lock()
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, file_mode)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise WalLocked(f"{self.directory} is used by another process") from None
        self._records: deque[_Record] = deque()  # unacknowledged, in order
        self._segments: list[int] = []  # bases, ascending; the last is the active one
        self.pending_bytes = 0
        self.pending_events = 0
        self.refusing = False  # the last record offered did not fit, and nothing was released since
        self._fd = -1
        self._open()

    # -- opening and recovery -------------------------------------------------------------------

    def _path(self, base: int) -> Path:
        return self.directory / f"{self._prefix}{base:020d}{_SEGMENT_SUFFIX}"

    def _read_checkpoint(self) -> int:
        try:
            return int(orjson.loads((self.directory / self._checkpoint_name).read_bytes())["position"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            # Only ever replaced by rename, so this means outside damage: replay all (the writer dedupes).
            log.warning("unreadable WAL checkpoint in %s; replaying every retained batch", self.directory)
            return 0

    def _open(self) -> None:
        self.checkpoint = self._read_checkpoint()
        bases = sorted(int(p.name[len(self._prefix) : -len(_SEGMENT_SUFFIX)]) for p in self.segment_files())
        end = self.checkpoint
        for index, base in enumerate(bases):
            path = self._path(base)
            last = index == len(bases) - 1
            if not last and bases[index + 1] <= self.checkpoint:
                path.unlink(missing_ok=True)  # fully acknowledged; a crash beat its deletion
                continue
            records, valid, torn = _scan(path, base)
            if torn:
                if last:
                    log.warning("WAL %s: ignoring a torn tail after byte %d", path.name, valid)
                    with open(path, "r+b") as f:
                        f.truncate(valid)
                        os.fsync(f.fileno())
                else:
                    log.error("WAL %s: corrupt record at byte %d; skipping the rest of the segment", path.name, valid)
            self._segments.append(base)
            for record in records:
                if record.end > self.checkpoint:
                    self._records.append(record)
                    self.pending_bytes += record.size
                    self.pending_events += record.count
            end = max(end, base + valid)
        if not self._segments or self._segments[-1] + self._active_size_of(self._segments[-1]) < end:
            self._segments.append(end)
            self._create_segment(end)
        self._open_active()

    def _active_size_of(self, base: int) -> int:
        try:
            return self._path(base).stat().st_size
        except FileNotFoundError:
            return 0

    def _create_segment(self, base: int) -> None:
        fd = os.open(self._path(base), os.O_WRONLY | os.O_CREAT, self._mode)
        os.fsync(fd)
        os.close(fd)
        _fsync_dir(str(self.directory))

    def _open_active(self) -> None:
        base = self._segments[-1]
        self._fd = os.open(self._path(base), os.O_WRONLY | os.O_APPEND)
        self._active_base = base
        self._active_size = os.fstat(self._fd).st_size

    # -- writing --------------------------------------------------------------------------------

    @property
    def end_position(self) -> int:
        return self._active_base + self._active_size

    def append(self, batch: list) -> int:
        """Write one batch and fsync it; return the position to acknowledge it with.

        Raises BufferFull when the unacknowledged bytes would pass the limit."""
        framed, count = frame(batch)
        return self.append_framed(framed, count)

    def append_framed(self, framed: bytes, count: int) -> int:
        """Write one framed record (header + payload) and fsync it."""
        (outcome,) = self.append_many([((framed,), len(framed), count)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def append_many(self, records: list[tuple[tuple, int, int]]) -> list[int | BaseException]:
        """Group commit: write records `(buffers, size, count)` in order (a record's buffers are its
        header and payload, `size` their total length) with one write and one fdatasync per segment
        touched. Returns, per record, its position once it is durable, or the exception that kept
        it out: BufferFull when it would pass the limit (later, smaller records may still fit), the
        OSError of a failed write or flush (then no record of that segment is kept)."""
        outcomes: list[int | BaseException] = [None] * len(records)  # type: ignore[list-item]
        with self._lock:
            if self._fd < 0:
                raise RuntimeError("WAL is closed")
            pending = self.pending_bytes
            chunk: list[int] = []  # indexes of records bound for the active segment
            chunk_bytes = 0
            for index, (_, size, _) in enumerate(records):
                if pending + size > self.max_bytes:
                    outcomes[index] = BufferFull(
                        f"local buffer full ({pending} of {self.max_bytes} bytes pending)"
                    )
                    self.refusing = True
                    continue
                self.refusing = False
                if self._active_size + chunk_bytes and self._active_size + chunk_bytes + size > self.segment_bytes:
                    self._commit_chunk(records, chunk, outcomes)
                    chunk, chunk_bytes = [], 0
                    try:
                        self._rotate()
                    except OSError as error:
                        for rest in range(index, len(records)):
                            if outcomes[rest] is None:
                                outcomes[rest] = error
                        return outcomes
                chunk.append(index)
                chunk_bytes += size
                pending += size
            self._commit_chunk(records, chunk, outcomes)
        return outcomes

    def _commit_chunk(self, records: list, chunk: list[int], outcomes: list) -> None:
        """Write and flush the records `chunk` (indexes into `records`) at the end of the active segment."""
        if not chunk:
            return
        offset = self._active_size
        try:
            write_all(self._fd, [buffer for index in chunk for buffer in records[index][0]])
            os.fdatasync(self._fd)
        except OSError as error:
            # Leave no half record behind (ENOSPC, EIO): the next append starts clean.
            try:
                os.ftruncate(self._fd, offset)
            except OSError:
                log.exception("WAL: could not truncate a failed append")
            for index in chunk:
                outcomes[index] = error
            return
        for index in chunk:
            _, size, count = records[index]
            record = _Record(self._active_base, offset, size, count)
            offset += size
            self._records.append(record)
            self.pending_bytes += size
            self.pending_events += count
            outcomes[index] = record.end
        self._active_size = offset

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        base = self._active_base + self._active_size
        self._create_segment(base)
        self._segments.append(base)
        self._open_active()

    # -- reading and acknowledging --------------------------------------------------------------

    def payloads(self) -> Iterator[tuple[int, int, bytes | None]]:
        """`(position, count, payload)` of every unacknowledged record, oldest first; the payload is
        crc-checked, None (logged) for a record damaged on disk since it was written. Ends early
        when a segment was acknowledged and deleted meanwhile."""
        with self._lock:
            records = list(self._records)
        handles: dict[int, object] = {}
        try:
            for record in records:
                handle = handles.get(record.base)
                if handle is None:
                    try:
                        handle = handles[record.base] = open(self._path(record.base), "rb")
                    except FileNotFoundError:
                        return  # acknowledged and deleted meanwhile
                handle.seek(record.offset)
                yield record.end, record.count, _checked(handle.read(record.size), record.end)
        finally:
            for handle in handles.values():
                handle.close()

    def pending(self, limit_events: int | None = None) -> Iterator[WalBatch]:
        """Unacknowledged batches from the checkpoint on, oldest first (optionally stopping once
        `limit_events` events have been yielded)."""
        if limit_events is not None and limit_events <= 0:
            return
        yielded = 0
        for position, _, payload in self.payloads():
            events = decode(payload, position)
            yielded += len(events)
            yield WalBatch(position, events)
            if limit_events is not None and yielded >= limit_events:
                return  # before the next record is read

    def acknowledge(self, position: int) -> None:
        """Mark everything up to `position` as stored: persist the checkpoint, drop spent segments."""
        with self._ack_lock:
            self._release(position)

    def release_oldest(self, room: int) -> int:
        """Acknowledge the oldest pending records until `room` more bytes fit under `max_bytes`,
        for a log that gives up old records rather than refusing new ones; returns how many events
        were released (0 when they already fit)."""
        with self._ack_lock:
            with self._lock:
                excess, position = self.pending_bytes + room - self.max_bytes, self.checkpoint
                for record in self._records:
                    if excess <= 0:
                        break
                    excess -= record.size
                    position = record.end
            return self._release(position)

    def _release(self, position: int) -> int:
        """Persist `position` as the checkpoint and forget what it covers (under `_ack_lock`);
        returns how many events that released."""
        if position <= self.checkpoint:
            return 0
        tmp = self.directory / (self._checkpoint_name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self._mode)
        try:
            write_all(fd, [orjson.dumps({"position": position})])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / self._checkpoint_name)
        _fsync_dir(str(self.directory))
        released = 0
        with self._lock:
            self.checkpoint = position
            self.refusing = False
            while self._records and self._records[0].end <= position:
                record = self._records.popleft()
                self.pending_bytes -= record.size
                self.pending_events -= record.count
                released += record.count
            spent = []
            while len(self._segments) > 1 and self._segments[1] <= position:
                spent.append(self._segments.pop(0))
        for base in spent:
            self._path(base).unlink(missing_ok=True)
        return released

    def segment_files(self) -> list[Path]:
        return sorted(self.directory.glob(f"{self._prefix}*{_SEGMENT_SUFFIX}"))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

    def __enter__(self) -> "WriteAheadLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
