"""The collector's disk buffer: order, restarts, bounds (drop oldest, counted), torn tails, locking."""

from __future__ import annotations

import pytest

from anysentry.collector.buffer import BufferLocked, DiskBuffer


def items(prefix: str, n: int, size: int = 10) -> list[dict]:
    return [{"line": f"{prefix}-{i}-" + "x" * size} for i in range(n)]


def drain(buffer: DiskBuffer, max_items: int = 1000) -> list:
    out = []
    while (batch := buffer.peek(max_items)) is not None:
        out.append((batch.route, [i["line"] for i in batch.items]))
        buffer.ack(batch.end)
    return out


def test_items_come_back_in_order_across_restarts_until_acknowledged(tmp_path):
    buffer = DiskBuffer(tmp_path, max_bytes=1 << 20)
    buffer.append("batch", items("a", 2))
    buffer.append("batch", items("b", 1))
    buffer.append("falco", [{"rule": "Terminal shell in container"}])
    first = buffer.peek(2)
    assert (first.route, [i["line"] for i in first.items]) == ("batch", ["a-0-" + "x" * 10, "a-1-" + "x" * 10])
    buffer.ack(first.end)
    buffer.close()

    reopened = DiskBuffer(tmp_path, max_bytes=1 << 20)
    assert reopened.pending_items == 2
    batch = reopened.peek(100)  # consecutive records of one route travel together, routes never mix
    assert batch.route == "batch" and [i["line"] for i in batch.items] == ["b-0-" + "x" * 10]
    reopened.ack(batch.end)
    falco = reopened.peek(100)
    assert falco.route == "falco" and falco.items == [{"rule": "Terminal shell in container"}]
    reopened.ack(falco.end)
    assert reopened.peek(100) is None and reopened.pending_items == 0
    reopened.close()
    assert DiskBuffer(tmp_path, max_bytes=1 << 20).peek(100) is None


def test_a_full_buffer_drops_the_oldest_and_counts_them(tmp_path):
    buffer = DiskBuffer(tmp_path, max_bytes=4000)
    dropped = sum(buffer.append("batch", items(f"r{r}", 5, size=100)) for r in range(10))
    assert dropped > 0 and buffer.dropped_items == dropped
    assert buffer.pending_bytes <= 4000
    kept = [line for _, lines in drain(buffer, 5) for line in lines]
    assert len(kept) + dropped == 50
    assert kept[-1].startswith("r9-4-")  # the newest survive
    assert kept == sorted(kept, key=lambda line: (int(line[1:line.index("-")]), line))
    buffer.close()
    assert DiskBuffer(tmp_path, max_bytes=4000).peek(100) is None  # dropped ones never come back


def test_a_record_larger_than_the_whole_buffer_is_refused_and_counted(tmp_path):
    buffer = DiskBuffer(tmp_path, max_bytes=1000)
    buffer.append("batch", items("small", 1))
    assert buffer.append("batch", items("huge", 3, size=2000)) == 3
    assert drain(buffer) == [("batch", ["small-0-" + "x" * 10])]


def test_a_torn_tail_is_ignored_and_writing_continues(tmp_path):
    buffer = DiskBuffer(tmp_path, max_bytes=1 << 20)
    buffer.append("batch", items("ok", 2))
    buffer.close()
    (segment,) = tmp_path.glob("seg-*.log")
    with open(segment, "ab") as handle:
        handle.write(b"\x40\x00\x00\x00\x01\x00\x00\x00\x00garbage from a crash mid-write")
    reopened = DiskBuffer(tmp_path, max_bytes=1 << 20)
    reopened.append("batch", items("after", 1))
    assert [line for _, lines in drain(reopened) for line in lines] == [
        "ok-0-" + "x" * 10, "ok-1-" + "x" * 10, "after-0-" + "x" * 10]


def test_segments_roll_over_and_spent_ones_are_deleted(tmp_path):
    buffer = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=300)
    for r in range(6):
        buffer.append("batch", items(f"s{r}", 2, size=60))
    assert len(list(tmp_path.glob("seg-*.log"))) > 2
    assert len([line for _, lines in drain(buffer, 2) for line in lines]) == 12
    assert len(list(tmp_path.glob("seg-*.log"))) == 1
    buffer.close()
    reopened = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=300)
    reopened.append("batch", items("next", 1))
    assert drain(reopened) == [("batch", ["next-0-" + "x" * 10])]


def test_a_second_collector_on_the_same_directory_is_refused(tmp_path):
    DiskBuffer(tmp_path, max_bytes=1 << 20)
    with pytest.raises(BufferLocked, match="used by another collector"):
        DiskBuffer(tmp_path, max_bytes=1 << 20)
