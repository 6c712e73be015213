"""A web process's own intake journal: records made durable with one `fdatasync`, no database.

Why: on the embedded SQLite store, every web process committing its own transaction costs an
fsync per few requests, the cross-process write lock, and re-reading the pages the other
process changed (measured in docs/architecture.md, "Ingest performance"). A journal file per
process costs a write and a shared `fdatasync`; a background thread then moves the records into
the store in large transactions (`integrations/intake.py`).

Layout. Each process writes two segment files, `<token>-a.journal` and `<token>-b.journal`,
and holds an exclusive `flock` on both for as long as it lives, so another process can tell a
live journal from one a dead process left behind. A segment is a 4 KiB header (magic, a
generation number) followed by records: length, CRC-32, sequence number, payload. The CRC
covers the generation, so records of an earlier generation left further on in the file read as
garbage and end the scan. When the active segment is full the process switches to the other
one, once every record in it has reached the store, and starts a new generation there. Writes
overwrite space the file already has (it is zero-filled ahead in 1 MiB steps): on ext4 an
`fdatasync` that does not change the file's size costs about half as much.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from integrations.errors import StoreUnavailable
from integrations.groupcommit import GroupCommitter

MAGIC = b"DBJRNL01"
HEADER = struct.Struct("<8sI")  # magic, generation
HEADER_BYTES = 4096
RECORD = struct.Struct("<IIQ")  # payload length, CRC-32 of (generation, seq, payload), seq
CHUNK = 1 << 20
SUFFIX = ".journal"

T = TypeVar("T")


class JournalFull(StoreUnavailable):
    """Both segments hold records the store has not taken yet (503: the sender retries)."""


@dataclass(frozen=True)
class Record:
    seq: int
    payload: bytes


def _crc(generation: int, seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<IQ", generation, seq)))


class Segment:
    """One segment file, locked by this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Made and locked under another name, then renamed: a recovering process must never
        # find (and take as abandoned) a segment that is not locked yet.
        making = path.with_name(path.name + ".new")
        self.fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, path)
        self.generation = 0
        self.allocated = 0
        self.offset = HEADER_BYTES
        self.last_seq = 0  # the newest record written in this generation (0: none)
        self.restart()
        os.fsync(self.fd)

    def restart(self) -> None:
        """Begin a new generation: the records already here no longer count.

        The new header needs no fsync of its own: the next append's `fdatasync` flushes it with
        its records, and until then the old records it hides were all in the store already.
        """
        self._allocate(HEADER_BYTES + CHUNK)  # first: it writes zeros from offset 0 on
        self.generation += 1
        os.pwrite(self.fd, HEADER.pack(MAGIC, self.generation), 0)
        self.offset = HEADER_BYTES
        self.last_seq = 0

    def append(self, records: Sequence[Record]) -> None:
        """Write records after the last ones and make them durable (raises OSError)."""
        data = b"".join(RECORD.pack(len(r.payload), _crc(self.generation, r.seq, r.payload), r.seq)
                        + r.payload for r in records)
        self._allocate(self.offset + len(data) + RECORD.size)
        os.pwrite(self.fd, data, self.offset)
        os.fdatasync(self.fd)
        self.offset += len(data)
        self.last_seq = records[-1].seq

    def _allocate(self, end: int) -> None:
        # Zeros ahead of the writer: a later record then overwrites, and a scan stops at a zero
        # length where the records end.
        while self.allocated < end:
            os.pwrite(self.fd, bytes(CHUNK), self.allocated)
            self.allocated += CHUNK

    def close(self, remove: bool) -> None:
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)


class Journal(Generic[T]):
    """This process's journal: `append` returns once the payloads are on disk.

    `on_durable([(record, item), ...])` is called with every appended batch, in sequence
    order, before the writers are answered; `item` is what the writer passed with the payload. `is_taken(seq)` says whether the store has every record up to
    `seq`; `wait_taken(seq, timeout)` waits for it (used when switching segments).
    """

    def __init__(self, directory: Path, *, segment_bytes: int,
                 on_durable: Callable[[list[tuple[Record, T]]], None],
                 wait_taken: Callable[[int, float], bool], switch_timeout: float = 5.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.segments = [Segment(directory / f"{token}-{side}{SUFFIX}") for side in "ab"]
        _fsync_directory(directory)
        self.paths = frozenset(s.path for s in self.segments)
        self._active = 0
        self._segment_bytes = segment_bytes
        self._on_durable = on_durable
        self._wait_taken = wait_taken
        self._switch_timeout = switch_timeout
        self._seq = 0
        self._sealed = False
        self._lock = threading.Lock()
        self._commits: GroupCommitter[list[tuple[bytes, T]], int] = GroupCommitter(self._commit)

    def append(self, entries: list[tuple[bytes, T]]) -> None:
        """Make each entry's payload durable (with whatever other threads append meanwhile).

        Raises JournalFull when the store has fallen too far behind, StoreUnavailable when the
        disk refuses the write.
        """
        self._commits.submit(entries)

    def _commit(self, batches: Sequence[list[tuple[bytes, T]]]) -> list[int]:
        with self._lock:
            if self._sealed:
                raise StoreUnavailable("shutting down: intake journal closed")
            entries: list[tuple[Record, T]] = []
            for batch in batches:
                for payload, item in batch:
                    self._seq += 1
                    entries.append((Record(self._seq, payload), item))
            records = [record for record, _ in entries]
            if records:
                self._segment_for(sum(len(r.payload) + RECORD.size for r in records))
                try:
                    self.segments[self._active].append(records)
                except OSError as err:
                    raise StoreUnavailable(f"intake journal not writable: {err}") from err
                self._on_durable(entries)
            return [len(b) for b in batches]

    def _segment_for(self, size: int) -> None:
        active = self.segments[self._active]
        if active.last_seq == 0 or active.offset + size <= self._segment_bytes:
            return
        other = self.segments[1 - self._active]
        if other.last_seq and not self._wait_taken(other.last_seq, self._switch_timeout):
            raise JournalFull("intake journal full: the store is not taking items")
        other.restart()
        self._active = 1 - self._active

    def seal(self) -> None:
        """Refuse appends from now on; returns once an append under way has finished."""
        with self._lock:
            self._sealed = True

    def close(self, remove: bool) -> None:
        """Close the segment files; `remove` deletes them (everything reached the store)."""
        with self._lock:
            self._sealed = True
            for segment in self.segments:
                segment.close(remove)


def read_segment(fd: int) -> Iterator[Record]:
    """The records of a segment's current generation, up to the first torn or stale one."""
    size = os.fstat(fd).st_size
    header = os.pread(fd, HEADER.size, 0)
    if len(header) < HEADER.size:
        return
    magic, generation = HEADER.unpack(header)
    if magic != MAGIC:
        return
    offset = HEADER_BYTES
    while offset + RECORD.size <= size:
        length, crc, seq = RECORD.unpack(os.pread(fd, RECORD.size, offset))
        if length == 0 or offset + RECORD.size + length > size:
            return
        payload = os.pread(fd, length, offset + RECORD.size)
        if _crc(generation, seq, payload) != crc:
            return
        yield Record(seq, payload)
        offset += RECORD.size + length


def orphans(directory: Path, own: frozenset[Path]) -> Iterator[tuple[Path, int]]:
    """Segments no live process holds, each opened and locked: (path, fd); the caller closes."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path in own:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # another process recovered it meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its process is alive
            os.close(fd)
            continue
        if os.fstat(fd).st_nlink == 0:  # recovered and removed while we waited to open it
            os.close(fd)
            continue
        yield path, fd


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
