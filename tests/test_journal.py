"""The intake journal's file format: what is read back after a crash, and when it is full."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from integrations.errors import StoreUnavailable
from integrations.journal import (
    HEADER_BYTES,
    RECORD,
    Journal,
    JournalFull,
    Record,
    Segment,
    orphans,
    read_segment,
)

Entries = list[tuple[Record, str]]


def read(path: Path) -> list[tuple[int, bytes]]:
    """(seq, payload) of every record a recovering process would read from this file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(r.seq, r.payload) for r in read_segment(fd)]
    finally:
        os.close(fd)


def make_journal(
    directory: Path, *, segment_bytes: int = 1 << 20,
    wait_taken: Callable[[int, float], bool] = lambda seq, timeout: True,
) -> tuple[Journal[str], Entries]:
    durable: Entries = []
    journal: Journal[str] = Journal(directory, segment_bytes=segment_bytes,
                                    on_durable=durable.extend, wait_taken=wait_taken,
                                    switch_timeout=0.5)
    return journal, durable


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "store.db.intake"


def test_appended_records_are_read_back_in_order_with_their_payloads(journal_dir: Path) -> None:
    """What a process wrote is what a recovering process reads, in the order it was written."""
    journal, durable = make_journal(journal_dir)
    journal.append([(b'{"id": "1"}', "first"), (b'{"id": "2"}', "second")])
    journal.append([(b'{"id": "3", "text": "caf\xc3\xa9"}', "third")])
    assert read(journal.segments[0].path) == [
        (1, b'{"id": "1"}'), (2, b'{"id": "2"}'), (3, b'{"id": "3", "text": "caf\xc3\xa9"}')]
    assert [(r.seq, item) for r, item in durable] == [(1, "first"), (2, "second"), (3, "third")]
    assert sorted(p.name[-10:] for p in journal_dir.glob("*.journal")) == [
        "-a.journal", "-b.journal"]
    assert all(p.name.startswith(f"{os.getpid()}-") for p in journal_dir.glob("*.journal"))
    journal.close(remove=True)
    assert list(journal_dir.glob("*.journal")) == []


@pytest.mark.parametrize("damage", ["truncated", "garbled payload", "garbled length",
                                    "zeroed"])
def test_a_torn_last_record_ends_the_scan_at_the_last_whole_one(
    journal_dir: Path, tmp_path: Path, damage: str,
) -> None:
    """A crash mid-write loses only the record being written, never the ones before it."""
    journal, _ = make_journal(journal_dir)
    payloads = [b"alpha" * 10, b"beta" * 10, b"gamma" * 10]
    for payload in payloads:
        journal.append([(payload, "item")])
    copy = tmp_path / "torn.journal"  # damage a copy: the live file stays the journal's
    shutil.copyfile(journal.segments[0].path, copy)
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
    assert read(journal.segments[0].path) == [(1, payloads[0]), (2, payloads[1]),
                                              (3, payloads[2])]
    journal.close(remove=True)


def test_the_zero_filled_space_after_the_records_ends_the_scan(journal_dir: Path) -> None:
    """The preallocated zeros after the last record are not read as records."""
    journal, _ = make_journal(journal_dir)
    journal.append([(b"only", "item")])
    path = journal.segments[0].path
    assert path.stat().st_size > HEADER_BYTES + 1000  # preallocated, zero-filled
    assert read(path) == [(1, b"only")]
    assert read(journal.segments[1].path) == []  # a fresh segment holds nothing
    journal.close(remove=True)


def test_records_of_an_earlier_generation_are_not_replayed(tmp_path: Path) -> None:
    """Once a segment starts over, the records it held before (all in the store) stay unread."""
    segment = Segment(tmp_path / "seg.journal")
    segment.append([Record(1, b"x" * 40), Record(2, b"y" * 40)])
    assert read(segment.path) == [(1, b"x" * 40), (2, b"y" * 40)]
    segment.restart()
    assert read(segment.path) == []
    # Same length as the first old record: the second old record follows intact, but it
    # belongs to the earlier generation and must not be read.
    segment.append([Record(1, b"z" * 40)])
    assert read(segment.path) == [(1, b"z" * 40)]
    segment.close(remove=True)
    assert not segment.path.exists()


def test_a_full_segment_switches_and_raises_journal_full_while_the_store_lags(
    journal_dir: Path,
) -> None:
    """The journal refuses new records (503) rather than overwrite ones the store lacks."""
    answers: list[bool] = []
    asked: list[int] = []

    def wait_taken(seq: int, timeout: float) -> bool:
        asked.append(seq)
        return answers.pop(0)

    payload = b"p" * 60  # two records do not fit in one segment
    journal, durable = make_journal(journal_dir, segment_bytes=HEADER_BYTES + 100,
                                    wait_taken=wait_taken)
    a, b = (s.path for s in journal.segments)
    journal.append([(payload + b"1", "one")])
    journal.append([(payload + b"2", "two")])  # b was never used: no need to wait
    assert asked == []
    assert read(a) == [(1, payload + b"1")] and read(b) == [(2, payload + b"2")]

    answers.append(False)  # the store has not taken record 1: a cannot be reused
    with pytest.raises(JournalFull) as refused:
        journal.append([(payload + b"3", "three")])
    assert isinstance(refused.value, StoreUnavailable)
    assert asked == [1]
    assert [item for _, item in durable] == ["one", "two"]  # "three" was never durable
    assert read(a) == [(1, payload + b"1")] and read(b) == [(2, payload + b"2")]

    answers.append(True)  # now it has: a starts over and takes the next record
    journal.append([(payload + b"4", "four")])
    assert asked == [1, 1]
    (seq, data), = read(a)
    assert data == payload + b"4" and seq > 2
    assert read(b) == [(2, payload + b"2")]
    assert [item for _, item in durable] == ["one", "two", "four"]
    journal.close(remove=True)


def test_a_lock_held_on_another_descriptor_of_this_process_conflicts(tmp_path: Path) -> None:
    """flock is per open file description: this process cannot take a live journal's lock."""
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


def test_orphans_skips_live_journals_and_yields_one_left_behind(journal_dir: Path) -> None:
    """Recovery takes a dead process's journal, never one a live process is writing."""
    live, _ = make_journal(journal_dir)
    live.append([(b"live", "item")])
    assert list(orphans(journal_dir, frozenset())) == []  # locked, though not listed as own

    left = Segment(journal_dir / "999999-dead-a.journal")  # as a killed process leaves it
    left.append([Record(1, b"left")])
    os.close(left.fd)  # its process is gone: so is its lock

    assert list(orphans(journal_dir, frozenset({left.path}))) == []  # own files are skipped
    found = list(orphans(journal_dir, frozenset()))
    assert [path for path, _ in found] == [left.path]
    (_, fd), = found
    try:
        assert [(r.seq, r.payload) for r in read_segment(fd)] == [(1, b"left")]
        assert list(orphans(journal_dir, frozenset())) == []  # held while it is recovered
    finally:
        os.close(fd)
    again = list(orphans(journal_dir, frozenset()))  # released: another recoverer may take it
    for _, fd in again:
        os.close(fd)
    assert [path for path, _ in again] == [left.path]
    live.close(remove=True)


def test_orphans_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    """A store that never had a journal has nothing to recover."""
    assert list(orphans(tmp_path / "nowhere", frozenset())) == []


def test_a_sealed_journal_refuses_appends_so_nothing_is_answered_after_shutdown(
    journal_dir: Path,
) -> None:
    """A request still under way at shutdown gets a 503 (X retries), not a record nobody moves."""
    journal, durable = make_journal(journal_dir)
    journal.seal()
    with pytest.raises(StoreUnavailable, match="shutting down"):
        journal.append([(b"late", "item")])
    assert durable == []
    journal.close(remove=True)


def test_a_segment_appears_under_its_name_only_once_locked(journal_dir: Path) -> None:
    """Recovery never finds a journal in the moment between its creation and its lock."""
    journal, _ = make_journal(journal_dir)
    assert sorted(p.suffix for p in journal_dir.iterdir()) == [".journal", ".journal"]
    assert list(orphans(journal_dir, frozenset())) == []  # both are locked by their maker
    journal.close(remove=True)
