"""Following input files: appends, partial lines, rotation, truncation, globs, restarts, stdin."""

from __future__ import annotations

import io
import os
import time

import orjson

from anysentry.collector.tail import MAX_LINE, OffsetBook, Tailer


def follow(tmp_path, *inputs, stdin=None) -> Tailer:
    return Tailer(list(inputs), OffsetBook(tmp_path / "offsets.json"), stdin)


def read(tailer: Tailer) -> list[bytes]:
    """One poll, committed as the collector does once the lines are buffered."""
    out = []
    for _route, tail, lines, offset in tailer.poll():
        out += [line.data for line in lines]
        tail.commit(offset)
    tailer.save()
    return out


def test_appended_lines_are_read_once_and_a_partial_line_waits(tmp_path):
    path = tmp_path / "observer.ndjson"
    path.write_bytes(b'{"a":1}\n{"a":2}\n{"a":')
    tailer = follow(tmp_path, ("batch", str(path)))
    assert read(tailer) == [b'{"a":1}', b'{"a":2}']
    assert read(tailer) == []
    with open(path, "ab") as handle:
        handle.write(b'3}\n\n{"a":4}\n')
    assert read(tailer) == [b'{"a":3}', b'{"a":4}']  # blank lines are skipped


def test_a_restart_resumes_after_the_last_committed_line(tmp_path):
    path = tmp_path / "observer.ndjson"
    path.write_bytes(b"one\ntwo\n")
    tailer = follow(tmp_path, ("batch", str(path)))
    (route, tail, lines, offset), = tailer.poll()
    assert [line.data for line in lines] == [b"one", b"two"]
    assert [line.seq for line in lines] == [0, 4]  # byte offsets: the stable part of a source event id
    tail.commit(4)  # only "one" made it into the buffer before the crash
    tailer.save()
    tailer.close()
    with open(path, "ab") as handle:
        handle.write(b"three\n")
    again = follow(tmp_path, ("batch", str(path)))
    assert read(again) == [b"two", b"three"]


def test_rotation_finishes_the_old_file_then_follows_the_new_one(tmp_path):
    path = tmp_path / "falco.json"
    path.write_bytes(b"old-1\n")
    tailer = follow(tmp_path, ("falco", str(path)))
    assert read(tailer) == [b"old-1"]
    with open(path, "ab") as handle:
        handle.write(b"old-2\nold-last-without-newline")
    os.rename(path, tmp_path / "falco.json.1")
    path.write_bytes(b"new-1\n")
    assert read(tailer) == [b"old-2", b"old-last-without-newline"]
    assert read(tailer) == [b"new-1"]
    with open(path, "ab") as handle:
        handle.write(b"new-2\n")
    assert read(tailer) == [b"new-2"]


def test_truncation_starts_over_from_the_beginning(tmp_path):
    path = tmp_path / "tetragon.json"
    path.write_bytes(b"first line that is long\nsecond line\n")
    tailer = follow(tmp_path, ("tetragon", str(path)))
    assert len(read(tailer)) == 2
    with open(path, "r+b") as handle:  # copytruncate
        handle.truncate(0)
    assert read(tailer) == []
    path.write_bytes(b"after\n")
    assert read(tailer) == [b"after"]


def test_globs_pick_up_new_files_and_a_reused_inode_is_not_trusted(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.ndjson").write_bytes(b"a1\n")
    tailer = follow(tmp_path, ("batch", str(logs / "*.ndjson")))
    assert read(tailer) == [b"a1"]
    (logs / "b.ndjson").write_bytes(b"b1\n")
    (logs / "ignored.txt").write_bytes(b"x\n")
    assert read(tailer) == [b"b1"]
    tailer.close()
    book = orjson.loads((tmp_path / "offsets.json").read_bytes())
    assert sorted(entry["path"] for entry in book.values()) == [str(logs / "a.ndjson"), str(logs / "b.ndjson")]
    for entry in book.values():
        entry["head"] = "0" * 16  # what a different file behind the same inode looks like
    (tmp_path / "offsets.json").write_bytes(orjson.dumps(book))
    assert sorted(read(follow(tmp_path, ("batch", str(logs / "*.ndjson"))))) == [b"a1", b"b1"]


def test_an_oversized_line_is_skipped_and_counted(tmp_path):
    path = tmp_path / "big.ndjson"
    path.write_bytes(b"before\n" + b"x" * (MAX_LINE + 10) + b"\nafter\n")
    tailer = follow(tmp_path, ("batch", str(path)))
    got = []
    for _ in range(4):
        got += read(tailer)
    assert got == [b"before", b"after"]
    assert tailer.take_oversized() == 1


def test_a_missing_file_is_waited_for(tmp_path):
    path = tmp_path / "later.ndjson"
    tailer = follow(tmp_path, ("batch", str(path)))
    assert read(tailer) == []
    path.write_bytes(b"here\n")
    assert read(tailer) == [b"here"]


def test_standard_input(tmp_path):
    tailer = follow(tmp_path, ("batch", "-"), stdin=io.BytesIO(b'{"a":1}\r\n\n{"a":2}\n'))
    got, deadline = [], time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:  # a reader thread feeds the tail
        got += read(tailer)
        time.sleep(0.01)
    assert got == [b'{"a":1}', b'{"a":2}']
