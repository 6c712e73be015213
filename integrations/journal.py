"""A web process's intake journal: records made durable with one `fdatasync`, no database.

Why: on the embedded SQLite store, every web process committing its own transaction costs an
fsync per few requests, the cross-process write lock, and re-reading the pages the other
process changed; and moving the records into the store in the web process itself cost it a
tenth of its CPU (measured in docs/architecture.md, "Ingest performance"). A journal file per
process costs a write and a shared `fdatasync`; a mover, in the worker, reads the records and
takes them into the store in large transactions (`integrations/intake.py`).

Layout. Each process writes segment files `<pid>-<token>-<n>.journal`, one at a time, and
holds an exclusive `flock` on the one it writes for as long as it writes it, so a mover can
tell a live segment (it reads what is there, and leaves the file) from a released one (it
reads the rest and removes the file). A segment is a 4 KiB header (magic, a generation
number) followed by records: length, CRC-32, sequence number, payload. The CRC covers the
generation, so a record that does not belong to the header's generation reads as garbage and
ends the scan. A full segment is released and the next one begun; segments are never reused
(journals that an earlier deskbridge reused, generation after generation, read the same way).
Writes overwrite space the file already has: on ext4 an `fdatasync` that does not change the
file's size costs about half as much. So the next segment is made whole (zero-filled to its
full size, its header written, synced) by a thread of its own once the active one is half
full, under a `.new` name; a request that finds the active segment full only renames it and
syncs the directory. Making a segment on the request's path (1 MiB of zeros, an fsync, a rename
and a directory fsync, under the journal's lock) held up every request behind it, and
zero-filling ahead of the writer made the next `fdatasync` write that 1 MiB too.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from integrations.errors import StoreUnavailable
from integrations.groupcommit import GroupCommitter

MAGIC = b"DBJRNL01"
HEADER = struct.Struct("<8sI")  # magic, generation
HEADER_BYTES = 4096
RECORD = struct.Struct("<IIQ")  # payload length, CRC-32 of (generation, seq, payload), seq
CHUNK = 1 << 20
SUFFIX = ".journal"
GENERATION = 1  # segments are no longer reused: every new one is generation 1


@dataclass(frozen=True)
class Record:
    seq: int
    payload: bytes


def _crc(generation: int, seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<IQ", generation, seq)))


class Segment:
    """One segment file, locked by this process while it writes it.

    `allocate`: how many bytes to zero-fill now (more are zero-filled as records need them).
    `named`: whether it takes its name now; a spare made ahead stays under its `.new` name
    (which a mover leaves alone while it is locked) until `name()`.
    """

    def __init__(self, path: Path, *, allocate: int = HEADER_BYTES + CHUNK,
                 named: bool = True) -> None:
        self.path = path
        # Made and locked under another name, then renamed: a mover must never find (and
        # take as released) a segment that is not locked yet.
        self.making = path.with_name(path.name + ".new")
        self.fd = os.open(self.making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.allocated = 0
        self.named = False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._allocate(max(allocate, HEADER_BYTES + 1))  # first: zeros from offset 0 on
            os.pwrite(self.fd, HEADER.pack(MAGIC, GENERATION), 0)
            os.fsync(self.fd)
            if named:
                self.name()
        except BaseException:
            self.discard()
            raise
        self.offset = HEADER_BYTES  # where the next record goes

    def name(self) -> None:
        """Give the segment its name (raises OSError); the caller syncs the directory."""
        os.rename(self.making, self.path)
        self.named = True

    def append(self, records: Sequence[Record]) -> None:
        """Write records after the last ones and make them durable (raises OSError)."""
        data = b"".join(RECORD.pack(len(r.payload), _crc(GENERATION, r.seq, r.payload), r.seq)
                        + r.payload for r in records)
        self._allocate(self.offset + len(data) + RECORD.size)
        os.pwrite(self.fd, data, self.offset)
        os.fdatasync(self.fd)
        self.offset += len(data)

    def _allocate(self, end: int) -> None:
        # Zeros ahead of the writer: a later record then overwrites, and a scan stops at a zero
        # length where the records end. Synced chunk by chunk: one large write would make
        # the other processes' next fdatasync wait for all of it.
        while self.allocated < end:
            os.pwrite(self.fd, bytes(CHUNK), self.allocated)
            os.fdatasync(self.fd)
            self.allocated += CHUNK

    def release(self) -> None:
        """Stop writing here: the lock goes, and a mover takes the file from now on."""
        os.close(self.fd)

    def discard(self) -> None:
        """Close and remove a segment that holds no record (a spare, or one half made)."""
        os.close(self.fd)
        (self.path if self.named else self.making).unlink(missing_ok=True)


class _Spare:
    """The next segment, made on a thread of its own while the active one fills."""

    def __init__(self, make: Callable[[], Segment]) -> None:
        self._make = make
        self._segment: Segment | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="deskbridge-journal-spare")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._segment = self._make()
        except OSError as err:  # told to the request that needs the segment
            self._error = err

    def take(self) -> Segment:
        """The segment, once made (raises the OSError that making it raised)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._segment is not None
        return self._segment

    def discard(self) -> None:
        """Remove the segment unused (the journal is closing)."""
        self._thread.join()
        if self._segment is not None:
            self._segment.discard()


class Journal:
    """This process's journal: `append` returns once the payloads are on disk."""

    def __init__(self, directory: Path, *, segment_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._segment_bytes = segment_bytes
        self._count = 0
        self._seq = 0
        self._sealed = False
        self._failed = False  # the active segment's last write failed
        self._lock = threading.Lock()
        self._written: dict[Path, int] = {}  # every segment begun here: its end of records
        self._spare: _Spare | None = None
        self._active = self._begin()
        self._commits: GroupCommitter[list[bytes], int] = GroupCommitter(self._commit)

    def append(self, payloads: list[bytes]) -> None:
        """Make every payload durable (with whatever other threads append meanwhile).

        Raises StoreUnavailable when the disk refuses the write, or the journal is closed.
        """
        self._commits.submit(payloads)

    def written(self) -> dict[Path, int]:
        """Each segment this process wrote (and no mover has removed yet, as of the last
        segment begun), with the offset its records end at."""
        with self._lock:
            return dict(self._written)

    def _begin(self) -> Segment:
        # Segments a mover has taken and removed need no account any more.
        self._written = {p: end for p, end in self._written.items() if p.exists()}
        spare, self._spare = self._spare, None
        segment = spare.take() if spare is not None else self._make_segment()
        try:
            segment.name()
            _fsync_directory(self.directory)  # its name is durable before a record in it is
        except OSError:
            segment.discard()
            raise
        self._written[segment.path] = segment.offset
        return segment

    def _make_segment(self) -> Segment:
        self._count += 1  # one maker at a time: the first segment, then each spare in turn
        path = self.directory / f"{self._token}-{self._count:08d}{SUFFIX}"
        # Zero-filled to the size at which it is released, so no append extends it.
        return Segment(path, allocate=HEADER_BYTES + self._segment_bytes, named=False)

    def _commit(self, batches: Sequence[list[bytes]]) -> list[int]:
        with self._lock:
            if self._sealed:
                raise StoreUnavailable("shutting down: intake journal closed")
            records = []
            for batch in batches:
                for payload in batch:
                    self._seq += 1
                    records.append(Record(self._seq, payload))
            if records:
                try:
                    self._make_room(sum(len(r.payload) + RECORD.size for r in records))
                    self._active.append(records)
                except OSError as err:
                    # After a failed write or fdatasync, what the file holds past its last
                    # good record is unknown (a mover may even have read it): it is never
                    # written over; the next append begins a new segment.
                    self._failed = True
                    raise StoreUnavailable(f"intake journal not writable: {err}") from err
                self._written[self._active.path] = self._active.offset
                if self._spare is None and self._active.offset >= self._segment_bytes // 2:
                    self._spare = _Spare(self._make_segment)  # ready before this one is full
            return [len(b) for b in batches]

    def _make_room(self, size: int) -> None:
        active = self._active
        fits = active.offset == HEADER_BYTES or active.offset + size <= self._segment_bytes
        if fits and not self._failed:
            return
        self._active = self._begin()
        self._failed = False
        active.release()  # its records are durable: the appends that wrote them returned

    def close(self) -> None:
        """Refuse appends from now on (after the one under way) and release the segment."""
        with self._lock:
            if not self._sealed:
                self._sealed = True
                self._active.release()
                if self._spare is not None:
                    self._spare.discard()
                    self._spare = None


# ---------------------------------------------------------------- reading, for movers


def read_records(fd: int, offset: int = 0) -> Iterator[tuple[int, Record]]:
    """(end offset, record) for each record from `offset` on (0: the first), up to the first
    torn, stale or not yet written one."""
    header = os.pread(fd, HEADER.size, 0)
    if len(header) < HEADER.size:
        return
    magic, generation = HEADER.unpack(header)
    if magic != MAGIC:
        return
    window = _Window(fd)
    at = max(offset, HEADER_BYTES)
    while True:
        head = window.read(at, RECORD.size)
        if len(head) < RECORD.size:
            return
        length, crc, seq = RECORD.unpack(head)
        payload = window.read(at + RECORD.size, length) if length else b""
        if length == 0 or len(payload) < length or _crc(generation, seq, payload) != crc:
            return
        at += RECORD.size + length
        yield at, Record(seq, payload)


class _Window:
    """Reads a file in 64 KiB windows: a live segment is mostly zeros past its records."""

    SIZE = 64 << 10

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.base = 0
        self.data = b""

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset`, fewer at the end of the file."""
        if offset < self.base or offset + length > self.base + len(self.data):
            self.base, self.data = offset, os.pread(self.fd, max(length, self.SIZE), offset)
        return self.data[offset - self.base:offset - self.base + length]


def segment_paths(directory: Path) -> list[Path]:
    """Every segment in the journal directory, oldest of each process first."""
    return sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []


# A segment is created, then locked: between the two it looks abandoned. Only one untouched
# for this long is taken for one (making a segment writes to it, and a made spare is locked).
UNFINISHED_SECONDS = 60.0


def remove_unfinished(directory: Path, *, min_age: float = UNFINISHED_SECONDS) -> None:
    """Remove segments a process died making (created, never renamed: they hold nothing),
    once unlocked and untouched for `min_age` seconds."""
    for path in directory.glob(f"*{SUFFIX}.new"):
        try:
            if time.time() - path.stat().st_mtime < min_age:
                continue
        except FileNotFoundError:
            continue
        opened = open_segment(path)
        if opened is not None:
            fd, released = opened
            if released:
                path.unlink(missing_ok=True)
            os.close(fd)


def open_segment(path: Path) -> tuple[int, bool] | None:
    """(fd, released) for a segment: released when no process writes it any more (the fd
    then holds its lock); None if it is gone. The caller closes the fd."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:  # another mover took it meanwhile
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # its process writes it still
        return fd, False
    if os.fstat(fd).st_nlink == 0:  # taken and removed while we waited to open it
        os.close(fd)
        return None
    return fd, True


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
