"""How a webhook's events reach the store: straight in, or through the web process's journal.

`Intake.receive(events)` returns once the events are durable; that is when the sender gets its
200. On PostgreSQL it is `Pipeline.accept` (the database takes concurrent commits well). On
the embedded SQLite store the events go into the web process's journal
(`integrations/journal.py`), and a mover takes them into the store with `Pipeline.accept`,
many to a transaction: deduplicated, logged and queued there as any accepted item. The mover
is a thread of `deskbridge worker` and of `deskbridge run`, never of a `deskbridge serve` web
process: the web tier only verifies, parses and makes durable (DESIGN.md). It reads every
segment in the journal directory, each from where the last mover stopped (kept beside the
segment in a `.moved` file, so movers in several processes, or one that restarted, go on
from there), and removes a segment once its writer has released it and all of it is in the
store. If the store is down the mover retries with backoff and the journal keeps the events
meanwhile; if a web process dies, its segment is released with it. Nothing that was answered
200 is lost; a record moved twice (a mover that died between the store's commit and its
`.moved` write) is a duplicate, and costs nothing. A record the store cannot take for any
reason but an outage (unreadable, or a value the store refuses) is set aside as a dead
letter with its raw bytes (`Store.set_aside`), so the records after it move on; `health`
tells /readyz when records have waited too long.
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from integrations import jsontext
from integrations.errors import DeskbridgeError, StoreUnavailable
from integrations.events import Event, event_json_bytes, from_record
from integrations.journal import (
    HEADER_BYTES,
    SUFFIX,
    UNFINISHED_SECONDS,
    Journal,
    Record,
    open_segment,
    read_records,
    remove_unfinished,
    segment_paths,
)
from integrations.pipeline import Pipeline
from integrations.queue import QueueUnavailable
from integrations.store import check_storable

log = logging.getLogger("deskbridge.intake")

SEGMENT_BYTES = 8 << 20
MOVE_BATCH = 500
PROGRESS = struct.Struct("<Q")  # the offset up to which a segment's records are in the store
REJECTED_SUFFIX = ".rejected"
ERROR_FILE = ".mover.error"  # the last pass's error, while passes fail
STALL_SECONDS = 60.0
WAITING_CAP = 100_000  # records counted per segment for /readyz (a full segment holds fewer)
SET_ASIDE_CHANNEL = "intake"  # the channel of a set-aside record's dead letter
# What a retry can fix: the store (or the disk under it) is down. Anything else a record
# meets on its way in is the record's own fault, and the record is set aside.
OUTAGES = (StoreUnavailable, QueueUnavailable, OSError)


class Intake(Protocol):
    def receive(self, events: Sequence[Event]) -> int:
        """Store events durably; returns how many. Raises StoreUnavailable if it cannot."""
        ...

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what was received so far is in the store; False on timeout."""
        ...

    def recover(self) -> int:
        """Move what the journals hold into the store now; returns how many were moved."""
        ...

    def start(self, stop: threading.Event) -> None:
        """Move journals into the store on a thread of this process until `stop` is set."""
        ...

    def health(self) -> dict[str, Any]:
        """Whether received events move into the store (`ok`), with details for /readyz."""
        ...

    def close(self) -> None:
        ...


class DirectIntake:
    """Each request commits its own events (PostgreSQL, or a SQLite store in memory)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def receive(self, events: Sequence[Event]) -> int:
        self.pipeline.accept(events)
        return len(events)

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def recover(self) -> int:
        return 0

    def start(self, stop: threading.Event) -> None:
        pass

    def health(self) -> dict[str, Any]:
        return {"ok": True, "journal": False}

    def close(self) -> None:
        pass


class JournalIntake:
    """Events made durable in this process's journal; moved into the store by a mover.

    `moves`: whether this process moves journals (worker, run), and so moves its own last
    records at `close`; a `serve` web process leaves them to the worker.
    """

    def __init__(self, pipeline: Pipeline, directory: Path, *, moves: bool = True,
                 poll_seconds: float = 0.02, segment_bytes: int = SEGMENT_BYTES,
                 retry_seconds: float = 0.5, max_retry_seconds: float = 10.0,
                 close_seconds: float = 10.0, stall_seconds: float = STALL_SECONDS,
                 wall: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.stall_seconds = stall_seconds  # a record waiting longer: the intake is not moving
        self._wall = wall
        self._first_seen: dict[tuple[Path, int], float] = {}
        self.moves = moves
        self._poll = poll_seconds
        self._segment_bytes = segment_bytes
        self._retry = (retry_seconds, max_retry_seconds)
        self._close_seconds = close_seconds  # how long close() waits for a store that is down
        self._journal: Journal | None = None
        self._pid: int | None = None
        self._open_lock = threading.Lock()
        self._mover = Mover(pipeline, directory)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def receive(self, events: Sequence[Event]) -> int:
        """Make events durable in this process's journal; returns how many.

        Raises PayloadError for an event the store could never hold (the sender gets a 400:
        in the journal it would only wait to be set aside), StoreUnavailable if the journal
        cannot be written.
        """
        for event in events:
            check_storable(event)
        if events:
            self._journal_here().append([event_json_bytes(e) for e in events])
        return len(events)

    def _journal_here(self) -> Journal:
        with self._open_lock:
            if self._journal is None or self._pid != os.getpid():  # a fork's child starts anew
                self._journal = Journal(self.directory, segment_bytes=self._segment_bytes)
                self._pid = os.getpid()
            return self._journal

    def _own(self) -> Journal | None:
        return self._journal if self._pid == os.getpid() else None

    def recover(self) -> int:
        """One pass of the mover over every segment; raises what the store raised."""
        return self._mover.move()

    def flush(self, timeout: float = 5.0) -> bool:
        """Move until every record this process wrote is in the store; False on timeout."""
        journal = self._own()
        return journal is None or self._move_until(journal.written(), timeout)

    def _move_until(self, written: dict[Path, int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = self._retry[0]
        while True:
            try:
                self._mover.move()
            except Exception as err:  # noqa: BLE001 -- reported; the records wait in the journal
                _log_refusal(err, delay)
            if self._mover.has_moved(written):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(self._retry[1], delay * 2)

    def start(self, stop: threading.Event) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(stop,), daemon=True,
                                            name="deskbridge-intake")
            self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        delay = self._retry[0]
        while not (stop.is_set() or self._stop.is_set()):
            try:
                self._mover.move()
                delay = self._retry[0]
                wait = self._poll
            except Exception as err:  # noqa: BLE001 -- whatever it is, the items must not be dropped
                _log_refusal(err, delay)
                wait, delay = delay, min(self._retry[1], delay * 2)
            if self._stop.wait(wait):
                return

    def health(self) -> dict[str, Any]:
        """Whether the intake moves: not when a record has waited longer than `stall_seconds`.

        Records carry no time. How long one has waited is at least the time since its
        segment was last written, and at least the time since this process first saw it
        waiting (where the mover's progress stood then): the larger of the two is reported,
        so an idle journal never looks stalled, and one that is written all the time does.
        """
        now, seen = self._wall(), {}
        segments = records = 0
        oldest = 0.0
        for path in segment_paths(self.directory):
            progress = _progress(path)
            waiting, written = _waiting(path, progress)
            if not waiting:
                continue
            segments, records = segments + 1, records + waiting
            first = seen[(path, progress)] = self._first_seen.get((path, progress), now)
            oldest = max(oldest, now - min(first, written))
        self._first_seen = seen
        details: dict[str, Any] = {
            "ok": oldest <= self.stall_seconds, "journal": True, "waiting_segments": segments,
            "waiting_records": records, "oldest_wait_seconds": round(oldest, 1),
            "stall_seconds": self.stall_seconds}
        error = _last_error(self.directory)
        if error is not None:
            details["last_error"] = error
        return details

    def close(self) -> None:
        """Stop writing (and moving); a mover moves this process's last records first."""
        with self._open_lock:
            journal = self._own()
            self._journal = None
        if journal is not None:
            journal.close()  # a request still under way gets a 503, not a record left behind
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.moves and journal is not None \
                and not self._move_until(journal.written(), self._close_seconds):
            log.warning("received items left in the intake journal for the next mover",
                        extra={"journal": str(self.directory)})


class Mover:
    """Takes what the journal directory's segments hold into the store, in order, once."""

    def __init__(self, pipeline: Pipeline, directory: Path) -> None:
        self.pipeline = pipeline
        self.directory = directory
        self._lock = threading.Lock()
        self._tidied_at: float | None = None  # time.monotonic() of the last tidy
        self._failing = True  # until a pass succeeds: an error file may be a dead mover's

    def move(self) -> int:
        """One pass over every segment; returns how many records it moved.

        Raises what the store raised: what was not moved stays in the journal for the next.
        """
        with self._lock, _one_mover(self.directory):
            try:
                moved = self._move_all()
            except Exception as err:
                _note_error(self.directory, err)
                self._failing = True
                raise
            if self._failing:
                (self.directory / ERROR_FILE).unlink(missing_ok=True)
                self._failing = False
            return moved

    def _move_all(self) -> int:
        moved, removed = 0, False
        for path in segment_paths(self.directory):
            count, gone = self._move_segment(path)
            moved, removed = moved + count, removed or gone
        last = self._tidied_at
        if removed or last is None or time.monotonic() - last > UNFINISHED_SECONDS:
            self._tidy()
        return moved

    def _tidy(self) -> None:
        # What a process killed at the wrong moment leaves: looked for on the first pass,
        # whenever a segment was released (a writer moved on, stopped or died), and once a
        # minute (a half-made segment is only taken for abandoned once it is a minute old).
        self._tidied_at = time.monotonic()
        remove_unfinished(self.directory)
        for progress in self.directory.glob("*.moved"):  # its segment was removed
            if not progress.with_suffix(SUFFIX).exists():
                progress.unlink(missing_ok=True)

    def has_moved(self, written: dict[Path, int]) -> bool:
        """Whether each segment is in the store up to the given offset (or gone)."""
        return all(not path.exists() or _progress(path) >= end for path, end in written.items())

    def _move_segment(self, path: Path) -> tuple[int, bool]:
        """How many records it moved, and whether the segment is gone now."""
        opened = open_segment(path)
        if opened is None:
            return 0, True
        fd, released = opened
        try:
            entries = list(read_records(fd, _progress(path)))
            for start in range(0, len(entries), MOVE_BATCH):
                batch = entries[start:start + MOVE_BATCH]
                self._accept(path, [record for _, record in batch])
                _set_progress(path, batch[-1][0])
            if released:
                path.unlink(missing_ok=True)
                _progress_path(path).unlink(missing_ok=True)
                if entries and _writer_is_gone(path):
                    log.warning("recovered received items from a stopped process's journal",
                                extra={"journal": path.name, "items": len(entries)})
            return len(entries), released
        finally:
            os.close(fd)

    def _accept(self, path: Path, records: list[Record]) -> None:
        """Take records into the store; each one it cannot take is set aside, and the rest go
        on. Raises what an outage raised (the batch waits in the journal for the next pass)."""
        readable: list[tuple[Record, str, Event]] = []
        for record in records:
            try:
                text = record.payload.decode()
                readable.append((record, text, from_record(jsontext.loads(text))))
            except Exception as err:  # noqa: BLE001 -- whatever is wrong with it, it must not stall the rest
                self._set_aside(path, record, f"not a readable event record: {_described(err)}")
        try:
            self._take(readable)
        except OUTAGES:
            raise
        except Exception as err:  # noqa: BLE001 -- a record the store refused: find which
            log.warning("the store refused a batch of received items; taking them one by one",
                        extra={"journal": path.name, "error": _described(err)})
            self._take_one_by_one(path, readable)

    def _take(self, entries: Sequence[tuple[Record, str, Event]]) -> None:
        # This is a background thread already: the queue write need not leave it.
        self.pipeline.accept([event for _, _, event in entries],
                             records=[text for _, text, _ in entries], queue_now=True)

    def _take_one_by_one(self, path: Path, entries: Sequence[tuple[Record, str, Event]]) -> None:
        for entry in entries:
            try:
                self._take([entry])
            except OUTAGES:
                raise
            except Exception as err:  # noqa: BLE001 -- set aside, whatever it is
                self._set_aside(path, entry[0], f"the store cannot take it: {_described(err)}")

    def _set_aside(self, path: Path, record: Record, reason: str) -> None:
        """Keep a record the store cannot take as a dead letter, with its bytes, so the ones
        after it move on; in a `.rejected` file beside the segment if even that is refused.

        Raises what an outage raised."""
        key = (SET_ASIDE_CHANNEL, path.name, f"record:{record.seq}")
        try:
            self.pipeline.store.set_aside(key, record.payload, reason, self.pipeline.clock())
            kept = "as a dead letter"
        except OUTAGES:
            raise
        except Exception as err:  # noqa: BLE001 -- the store refused even that: a file keeps it
            _write_rejected(path, record, reason, err)
            kept = f"in {path.name}{REJECTED_SUFFIX} ({_described(err)})"
        log.error("set aside a received record the store cannot take", extra={
            "journal": path.name, "seq": record.seq, "reason": reason, "kept": kept})


def _writer_is_gone(path: Path) -> bool:
    """Whether a released segment's process is gone (else it only began its next segment)."""
    pid = path.name.split("-", 1)[0]
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, as another user
        return False
    return False


def _progress_path(segment: Path) -> Path:
    return segment.with_suffix(".moved")


def _progress(segment: Path) -> int:
    try:
        data = _progress_path(segment).read_bytes()
    except FileNotFoundError:
        return HEADER_BYTES
    return PROGRESS.unpack(data)[0] if len(data) == PROGRESS.size else HEADER_BYTES


def _set_progress(segment: Path, offset: int) -> None:
    # No fsync: if the offset is lost, the next mover moves those records again, and the
    # store's natural keys make that a no-op.
    fd = os.open(_progress_path(segment), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, PROGRESS.pack(offset), 0)
    finally:
        os.close(fd)


def _write_rejected(path: Path, record: Record, reason: str, refusal: Exception) -> None:
    """Append the record, base64, with why, to the segment's `.rejected` file (fsynced)."""
    line = json.dumps({"seq": record.seq, "reason": reason, "refused": _described(refusal),
                       "raw_base64": base64.b64encode(record.payload).decode("ascii")})
    fd = os.open(path.with_suffix(REJECTED_SUFFIX), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _waiting(path: Path, progress: int) -> tuple[int, float]:
    """How many records of a segment wait after `progress` (at most WAITING_CAP), and when
    the segment was last written (epoch seconds)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # moved and removed meanwhile
        return 0, 0.0
    try:
        count = sum(1 for _ in itertools.islice(read_records(fd, progress), WAITING_CAP))
        return count, os.fstat(fd).st_mtime
    finally:
        os.close(fd)


def _note_error(directory: Path, err: Exception) -> None:
    """Leave the mover's last error beside the journal, for /readyz in any process."""
    try:
        (directory / ERROR_FILE).write_text(_described(err))
    except OSError:  # the disk refuses this too: the error is logged all the same
        pass


def _last_error(directory: Path) -> str | None:
    try:
        return (directory / ERROR_FILE).read_text()[:500]
    except (OSError, UnicodeDecodeError):
        return None


def _described(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:500]


def _log_refusal(err: Exception, delay: float) -> None:
    level = logging.WARNING if isinstance(err, DeskbridgeError) else logging.ERROR
    log.log(level, "store not taking received items; retrying",
            extra={"retry_in": delay, "error": f"{type(err).__name__}: {err}"})


@contextmanager
def _one_mover(directory: Path) -> Iterator[None]:
    """One mover at a time per journal directory, across processes (an `flock`)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".mover.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def make_intake(pipeline: Pipeline, *, journal: bool, moves: bool = True,
                stall_seconds: float = STALL_SECONDS) -> Intake:
    """A journal beside the pipeline's SQLite store file (when `journal`); else straight in."""
    database = pipeline.store.sqlite_file
    if journal and database:
        return JournalIntake(pipeline, Path(f"{database}.intake"), moves=moves,
                             stall_seconds=stall_seconds)
    return DirectIntake(pipeline)
