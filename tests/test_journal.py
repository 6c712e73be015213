"""The intake journal's file format: what a mover reads back, live or after a crash."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from integrations.errors import StoreUnavailable
from integrations.journal import (
    HEADER,
    HEADER_BYTES,
    MAGIC,
    RECORD,
    Journal,
    Record,
    Segment,
    open_segment,
    read_records,
    segment_paths,
)


def read(path: Path, offset: int = 0) -> list[tuple[int, bytes]]:
    """(seq, payload) of every record a mover would read from this file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(r.seq, r.payload) for _, r in read_records(fd, offset)]
    finally:
        os.close(fd)


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "store.db.intake"


def only_segment(directory: Path) -> Path:
    (path,) = segment_paths(directory)
    return path


def test_appended_records_are_read_back_in_order_with_their_payloads(journal_dir: Path) -> None:
    """What a process wrote is what a mover reads, in the order it was written."""
    journal = Journal(journal_dir, segment_bytes=1 << 20)
    journal.append([b'{"id": "1"}', b'{"id": "2"}'])
    journal.append([b'{"id": "3", "text": "caf\xc3\xa9"}'])
    path = only_segment(journal_dir)
    assert read(path) == [
        (1, b'{"id": "1"}'), (2, b'{"id": "2"}'), (3, b'{"id": "3", "text": "caf\xc3\xa9"}')]
    assert path.name.startswith(f"{os.getpid()}-")
    journal.close()
    assert read(path) == [(1, b'{"id": "1"}'), (2, b'{"id": "2"}'),
                          (3, b'{"id": "3", "text": "caf\xc3\xa9"}')]  # closing keeps them


def test_a_mover_reads_on_from_where_it_stopped(journal_dir: Path) -> None:
    """Each record's end offset lets the next pass read only what came after it."""
    journal = Journal(journal_dir, segment_bytes=1 << 20)
    journal.append([b"first", b"second"])
    path = only_segment(journal_dir)
    fd = os.open(path, os.O_RDONLY)
    try:
        ends = [end for end, _ in read_records(fd)]
        journal.append([b"third"])
        assert [(r.seq, r.payload) for _, r in read_records(fd, ends[-1])] == [(3, b"third")]
        assert [r.payload for _, r in read_records(fd, ends[0])] == [b"second", b"third"]
    finally:
        os.close(fd)
    journal.close()


def test_a_record_larger_than_the_read_window_is_read_whole(journal_dir: Path) -> None:
    journal = Journal(journal_dir, segment_bytes=1 << 20)
    big = b"x" * (200 << 10)
    journal.append([b"small", big, b"after"])
    assert [p for _, p in read(only_segment(journal_dir))] == [b"small", big, b"after"]
    journal.close()


@pytest.mark.parametrize("damage", ["truncated", "garbled payload", "garbled length",
                                    "zeroed"])
def test_a_torn_last_record_ends_the_scan_at_the_last_whole_one(
    journal_dir: Path, tmp_path: Path, damage: str,
) -> None:
    """A crash mid-write loses only the record being written, never the ones before it."""
    journal = Journal(journal_dir, segment_bytes=1 << 20)
    payloads = [b"alpha" * 10, b"beta" * 10, b"gamma" * 10]
    for payload in payloads:
        journal.append([payload])
    live = only_segment(journal_dir)
    copy = tmp_path / "torn.journal"  # damage a copy: the live file stays the journal's
    shutil.copyfile(live, copy)
    last = HEADER_BYTES + sum(RECORD.size + len(p) for p in payloads[:2])
    with open(copy, "r+b") as f:
        if damage == "truncated":
            f.truncate(last + RECORD.size + len(payloads[2]) - 1)
        elif damage == "garbled payload":
            f.seek(last + RECORD.size + 7)
            f.write(b"X")
        elif damage == "garbled length":
            f.seek(last)
            f.write((len(payloads[2]) - 1).to_bytes(4, "little"))
        else:  # the record never reached the disk: zeros where it would be
            f.seek(last)
            f.write(bytes(RECORD.size + len(payloads[2])))
    assert read(copy) == [(1, payloads[0]), (2, payloads[1])]
    assert read(live) == [(1, payloads[0]), (2, payloads[1]), (3, payloads[2])]
    journal.close()


def test_the_zero_filled_space_after_the_records_ends_the_scan(journal_dir: Path) -> None:
    """The preallocated zeros after the last record are not read as records."""
    journal = Journal(journal_dir, segment_bytes=1 << 20)
    assert read(only_segment(journal_dir)) == []  # a fresh segment holds nothing
    journal.append([b"only"])
    path = only_segment(journal_dir)
    assert path.stat().st_size > HEADER_BYTES + 1000  # preallocated, zero-filled
    assert read(path) == [(1, b"only")]
    journal.close()


def test_a_segment_an_earlier_deskbridge_reused_reads_its_current_generation_only(
    tmp_path: Path,
) -> None:
    """Journals left by the version that reused segments are still moved after an upgrade."""
    path = tmp_path / "4242-0ld0ld00-a.journal"

    def record(generation: int, seq: int, payload: bytes) -> bytes:
        crc = zlib.crc32(payload, zlib.crc32(struct.pack("<IQ", generation, seq)))
        return RECORD.pack(len(payload), crc, seq) + payload

    # Generation 3 wrote one record over generation 2's first; generation 2's second follows.
    body = record(3, 7, b"z" * 40) + record(2, 2, b"y" * 40)
    path.write_bytes(HEADER.pack(MAGIC, 3).ljust(HEADER_BYTES, b"\0") + body + bytes(64))
    assert read(path) == [(7, b"z" * 40)]


def test_a_full_segment_is_released_and_the_next_one_begun(journal_dir: Path) -> None:
    """Nothing is ever overwritten: a full segment is left to the mover, whole."""
    payload = b"p" * 60  # two records do not fit in one segment
    journal = Journal(journal_dir, segment_bytes=HEADER_BYTES + 100)
    journal.append([payload + b"1"])
    journal.append([payload + b"2"])
    journal.append([payload + b"3"])
    first, second, third = segment_paths(journal_dir)  # in the order they were begun
    assert [read(p) for p in (first, second, third)] == [
        [(1, payload + b"1")], [(2, payload + b"2")], [(3, payload + b"3")]]
    released = [p for p in (first, second, third) if _released(p)]
    assert released == [first, second]  # the one being written stays locked
    assert set(journal.written()) == {first, second, third}
    journal.close()
    assert _released(third)


def _released(path: Path) -> bool:
    opened = open_segment(path)
    assert opened is not None
    fd, released = opened
    os.close(fd)
    return released


def test_a_lock_held_on_another_descriptor_of_this_process_conflicts(tmp_path: Path) -> None:
    """flock is per open file description: even this process sees its own segment as live."""
    path = tmp_path / "x.journal"
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    other = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(holder)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once its holder is gone
    finally:
        os.close(other)


def test_a_segment_a_killed_process_left_reads_as_released(journal_dir: Path) -> None:
    journal_dir.mkdir()
    left = Segment(journal_dir / "999999-dead0000-00000001.journal")
    left.append([Record(1, b"left")])
    assert not _released(left.path)
    os.close(left.fd)  # its process is gone: so is its lock
    opened = open_segment(left.path)
    assert opened is not None
    fd, released = opened
    try:
        assert released and [r.payload for _, r in read_records(fd)] == [b"left"]
        assert not _released(left.path)  # held while a mover takes it
    finally:
        os.close(fd)


def test_a_missing_directory_has_no_segments(tmp_path: Path) -> None:
    """A store that never had a journal has nothing to move."""
    assert segment_paths(tmp_path / "nowhere") == []
    assert open_segment(tmp_path / "nowhere" / "gone.journal") is None


def test_a_closed_journal_refuses_appends_so_nothing_is_answered_after_shutdown(
    journal_dir: Path,
) -> None:
    """A request still under way at shutdown gets a 503 (X retries), not a lost record."""
    journal = Journal(journal_dir, segment_bytes=1 << 20)
    journal.close()
    with pytest.raises(StoreUnavailable, match="shutting down"):
        journal.append([b"late"])
    assert read(only_segment(journal_dir)) == []


def test_a_segment_appears_under_its_name_only_once_locked(journal_dir: Path) -> None:
    """A mover never finds a segment in the moment between its creation and its lock."""
    journal = Journal(journal_dir, segment_bytes=1 << 20)
    assert [p.suffix for p in journal_dir.iterdir()] == [".journal"]
    assert not _released(only_segment(journal_dir))
    journal.close()


def test_after_a_failed_write_the_journal_goes_on_in_a_new_segment(
    journal_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a failed fdatasync left in a file is never written over (a mover may have read
    it): the sender is told 503, and the next append begins a new segment."""
    journal = Journal(journal_dir, segment_bytes=1 << 20)
    journal.append([b"good"])
    first = only_segment(journal_dir)
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(StoreUnavailable, match="not writable"):
        journal.append([b"refused"])
    monkeypatch.setattr(os, "fdatasync", real)
    journal.append([b"retried"])
    assert segment_paths(journal_dir)[0] == first and _released(first)
    (second,) = [p for p in segment_paths(journal_dir) if p != first]
    assert [p for _, p in read(second)] == [b"retried"]
    assert read(first)[0] == (1, b"good")  # the refused one may follow it: a duplicate
    journal.close()


def test_a_segment_whose_maker_died_before_naming_it_is_removed(journal_dir: Path) -> None:
    from integrations.journal import remove_unfinished

    journal_dir.mkdir()
    dead = journal_dir / "999999-dead0000-00000001.journal.new"
    dead.write_bytes(b"")
    long_ago = time.time() - 3600
    os.utime(dead, (long_ago, long_ago))
    making = journal_dir / f"{os.getpid()}-live0000-00000001.journal.new"
    fd = os.open(making, os.O_RDWR | os.O_CREAT)
    os.utime(making, (long_ago, long_ago))
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # its maker is still at it
    # Created this instant and not locked yet: its maker is between os.open and flock.
    just_made = journal_dir / f"{os.getpid()}-live0000-00000002.journal.new"
    just_made.write_bytes(b"")
    try:
        remove_unfinished(journal_dir)
        assert not dead.exists() and making.exists() and just_made.exists()
    finally:
        os.close(fd)


def test_the_next_segment_is_made_ahead_and_no_append_grows_a_file(
    journal_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request that fills a segment only names the next one: it was zero-filled to its
    full size and synced beforehand, off the request's path (the p99 of bench.ingest)."""
    from integrations.journal import remove_unfinished

    payload = b"p" * 3000
    journal = Journal(journal_dir, segment_bytes=64 << 10)  # about 20 records a segment
    while journal._spare is None:  # begun once the active segment is half full
        journal.append([payload])
    journal._spare.take()  # wait until it is made
    (spare,) = journal_dir.glob("*.journal.new")
    remove_unfinished(journal_dir)  # a mover leaves a spare alone: it is locked
    assert spare.exists()
    sizes = {only_segment(journal_dir): only_segment(journal_dir).stat().st_size}
    made: list[str] = []  # the thread that made each segment
    real = Segment.__init__

    def counting(self: Segment, path: Path, **kwargs: object) -> None:
        made.append(threading.current_thread().name)
        real(self, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Segment, "__init__", counting)
    written = len(read(only_segment(journal_dir)))
    for n in range(60):
        journal.append([payload + str(n).encode()])
        for path in segment_paths(journal_dir):
            sizes.setdefault(path, path.stat().st_size)
            assert path.stat().st_size == sizes[path]  # overwritten in place, never grown
    journal.close()
    assert len(sizes) >= 3  # it moved on twice or more, each time to a segment made ahead:
    assert made and set(made) == {"deskbridge-journal-spare"}
    assert [seq for path in segment_paths(journal_dir) for seq, _ in read(path)] == list(
        range(1, written + 61))
    assert not list(journal_dir.glob("*.new"))  # the unused spare went with the journal
