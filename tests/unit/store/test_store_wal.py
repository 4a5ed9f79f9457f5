"""The durable local buffer: append/fsync, pending, checkpoint, segments, torn tails, limits."""

from __future__ import annotations

import os
import zlib

import orjson
import pytest
from store_helpers import make_events

from anysentry.store.wal import HEADER, BufferFull, WalLocked, WriteAheadLog, frame


def _ids(batches) -> list[str]:
    return [e.eventId for b in batches for e in b.events]


def test_append_pending_acknowledge(tmp_path):
    wal = WriteAheadLog(tmp_path / "wal", max_bytes=1 << 20)
    assert list(wal.pending()) == [] and wal.pending_bytes == 0
    a, b = make_events(3), make_events(2)
    pos_a = wal.append(a)
    pos_b = wal.append(b)
    assert pos_b > pos_a > 0 and wal.end_position == pos_b
    assert wal.pending_events == 5 and wal.pending_bytes == pos_b
    batches = list(wal.pending())
    assert [x.position for x in batches] == [pos_a, pos_b]
    assert batches[0].events == a and batches[1].events == b
    wal.acknowledge(pos_a)
    assert _ids(wal.pending()) == [e.eventId for e in b]
    assert wal.pending_events == 2 and wal.pending_bytes == pos_b - pos_a
    wal.acknowledge(pos_a)  # stale acknowledgements are harmless
    wal.close()

    reopened = WriteAheadLog(tmp_path / "wal", max_bytes=1 << 20)
    assert reopened.checkpoint == pos_a
    assert _ids(reopened.pending()) == [e.eventId for e in b] and reopened.pending_events == 2
    pos_c = reopened.append(make_events(1))
    assert pos_c > pos_b
    reopened.acknowledge(pos_c)
    assert list(reopened.pending()) == [] and reopened.pending_bytes == 0 and reopened.pending_events == 0
    reopened.close()


def test_pending_limit(tmp_path):
    with WriteAheadLog(tmp_path, max_bytes=1 << 20) as wal:
        for _ in range(5):
            wal.append(make_events(4))
        assert len(list(wal.pending(limit_events=6))) == 2
        assert len(list(wal.pending(limit_events=1))) == 1


def test_segments_rotate_and_are_deleted_once_acknowledged(tmp_path):
    wal = WriteAheadLog(tmp_path, max_bytes=1 << 22, segment_bytes=4096)
    positions = [wal.append(make_events(3)) for _ in range(12)]
    segments = wal.segment_files()
    assert len(segments) >= 4
    wal.acknowledge(positions[5])
    remaining = wal.segment_files()
    assert len(remaining) < len(segments)
    assert len(list(wal.pending())) == 6
    wal.close()
    reopened = WriteAheadLog(tmp_path, max_bytes=1 << 22, segment_bytes=4096)
    assert [b.position for b in reopened.pending()] == positions[6:]
    reopened.acknowledge(positions[-1])
    assert len(reopened.segment_files()) == 1  # only the active segment stays
    reopened.close()


def test_torn_tail_is_ignored_and_truncated(tmp_path):
    wal = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    kept = make_events(2)
    position = wal.append(kept)
    wal.close()
    segment = wal.segment_files()[-1]
    whole, _ = frame(make_events(2))
    with open(segment, "ab") as f:
        f.write(whole[: len(whole) // 2])  # a crash mid-write
    reopened = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    assert [b.events for b in reopened.pending()] == [kept]
    assert segment.stat().st_size == position  # garbage cut off; new appends start clean
    after = make_events(1)
    reopened.append(after)
    reopened.close()
    again = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    assert [b.events for b in again.pending()] == [kept, after]
    again.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00" * 64,  # zero-filled blocks after a power cut
        b"\xff\xff\xff\x7f" + b"junk",  # absurd length
        HEADER.pack(4, 1, 12345) + b"[{}]",  # plausible header, wrong crc
        b"\x01",  # shorter than a header
    ],
)
def test_garbage_at_the_end_never_crashes_the_reader(tmp_path, garbage):
    wal = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    kept = make_events(1)
    wal.append(kept)
    wal.close()
    with open(wal.segment_files()[-1], "ab") as f:
        f.write(garbage)
    reopened = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    assert [b.events for b in reopened.pending()] == [kept]
    assert reopened.pending_events == 1
    reopened.close()


def test_buffer_full_refuses_without_losing_anything(tmp_path):
    framed, _ = frame(make_events(2))
    wal = WriteAheadLog(tmp_path, max_bytes=len(framed) * 2 + 10)
    first = wal.append(make_events(2))
    wal.append(make_events(2))
    with pytest.raises(BufferFull):
        wal.append(make_events(2))
    assert wal.pending_events == 4
    wal.acknowledge(first)  # room again once the store took some
    wal.append(make_events(2))
    assert wal.pending_events == 4
    wal.close()


def test_a_second_owner_is_refused(tmp_path):
    wal = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    with pytest.raises(WalLocked):
        WriteAheadLog(tmp_path, max_bytes=1 << 20)
    wal.close()
    WriteAheadLog(tmp_path, max_bytes=1 << 20).close()


def test_damaged_checkpoint_replays_everything(tmp_path):
    wal = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    position = wal.append(make_events(2))
    wal.acknowledge(position)
    wal.append(make_events(1))
    wal.close()
    (tmp_path / "checkpoint").write_bytes(b"{not json")
    reopened = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    assert reopened.pending_events == 3  # the writer's replay dedupes what the store has
    reopened.close()


def test_record_damaged_after_writing_is_skipped_by_pending(tmp_path):
    wal = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    wal.append(make_events(1))
    later = make_events(1)
    wal.append(later)
    segment = wal.segment_files()[-1]
    with open(segment, "r+b") as f:  # flip a payload byte of the first record
        f.seek(HEADER.size + 3)
        byte = f.read(1)
        f.seek(HEADER.size + 3)
        f.write(bytes([byte[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())
    batches = list(wal.pending())
    assert [b.events for b in batches] == [[], later]
    wal.close()


def _record(events) -> tuple[tuple, int, int]:
    framed, count = frame(events)
    return (framed,), len(framed), count


def test_append_many_is_one_flush_for_a_group(tmp_path, monkeypatch):
    wal = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    flushes = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushes.append(fd), real(fd)))
    batches = [make_events(n) for n in (1, 3, 2)]
    positions = wal.append_many([_record(b) for b in batches])
    assert len(flushes) == 1
    assert positions == sorted(positions) and positions[-1] == wal.end_position
    assert wal.pending_events == 6
    wal.close()
    reopened = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    assert [(b.position, b.events) for b in reopened.pending()] == list(zip(positions, batches))
    reopened.close()


def test_append_many_refuses_only_what_does_not_fit(tmp_path):
    small, big = make_events(1), make_events(30)
    wal = WriteAheadLog(tmp_path, max_bytes=len(frame(small)[0]) * 2 + 10)
    outcomes = wal.append_many([_record(small), _record(big), _record(small)])
    assert isinstance(outcomes[1], BufferFull)
    assert isinstance(outcomes[0], int) and isinstance(outcomes[2], int) and outcomes[2] > outcomes[0]
    assert [b.events for b in wal.pending()] == [small, small]
    assert isinstance(wal.append_many([_record(small)])[0], BufferFull)  # full now
    wal.close()


def test_append_many_rotates_segments_inside_a_group(tmp_path):
    wal = WriteAheadLog(tmp_path, max_bytes=1 << 22, segment_bytes=4096)
    batches = [make_events(3) for _ in range(12)]
    positions = wal.append_many([_record(b) for b in batches])
    assert all(isinstance(p, int) for p in positions)
    assert len(wal.segment_files()) >= 4
    wal.close()
    reopened = WriteAheadLog(tmp_path, max_bytes=1 << 22, segment_bytes=4096)
    assert [b.events for b in reopened.pending()] == batches
    reopened.close()


def test_a_failed_flush_fails_the_whole_group_and_leaves_no_trace(tmp_path, monkeypatch):
    wal = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    kept = make_events(2)
    before = wal.append(kept)

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    outcomes = wal.append_many([_record(make_events(1)), _record(make_events(2))])
    assert all(isinstance(o, OSError) for o in outcomes)
    assert wal.end_position == before and wal.pending_events == 2
    assert wal.segment_files()[-1].stat().st_size == before  # the half-written group is cut off
    monkeypatch.undo()
    after = make_events(1)
    wal.append(after)
    wal.close()
    reopened = WriteAheadLog(tmp_path, max_bytes=1 << 20)
    assert [b.events for b in reopened.pending()] == [kept, after]
    reopened.close()


def test_a_log_written_with_zlibs_checksum_is_read_back(tmp_path):
    """The record checksum is zlib's CRC-32 over the count and the payload, whichever library
    computes it: a log an earlier release wrote (with zlib) replays after an upgrade."""
    events = make_events(3)
    payload = orjson.dumps(events)
    checksum = zlib.crc32(payload, zlib.crc32((3).to_bytes(4, "little")))
    directory = tmp_path / "wal"
    with WriteAheadLog(directory, max_bytes=1 << 20) as wal:
        wal.append(events)
    segment = next(directory.glob("wal-*.log"))
    length, count, stored = HEADER.unpack_from(segment.read_bytes())
    assert (length, count, stored) == (len(payload), 3, checksum)

    segment.write_bytes(HEADER.pack(len(payload), 3, checksum) + payload)  # as zlib wrote it
    with WriteAheadLog(directory, max_bytes=1 << 20) as reopened:
        assert _ids(reopened.pending()) == [e.eventId for e in events]
