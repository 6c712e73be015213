"""How a webhook's events reach the store: straight in, or through this process's journal.

`Intake.receive(events)` returns once the events are durable; that is when the sender gets its
200. On PostgreSQL it is `Pipeline.accept` (the database takes concurrent commits well). On
the embedded SQLite store the events go into the process's journal (`integrations/journal.py`)
and a background thread moves them into the store with `Pipeline.accept`, many requests to a
transaction, within `linger` seconds: deduplicated, logged and queued there as any accepted
item. If the store is down the thread retries with backoff, and the journal keeps the events
meanwhile; if the process dies, the next deskbridge process to start (or the worker's sweeper)
finds its journal and moves what it holds into the store. Nothing that was answered 200 is
lost; a duplicate found on the way costs nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from integrations import jsontext
from integrations.batching import Batcher
from integrations.errors import DeskbridgeError
from integrations.events import Event, event_json_bytes, from_record
from integrations.journal import Journal, Record, orphans, read_segment
from integrations.pipeline import Pipeline

log = logging.getLogger("deskbridge.intake")

SEGMENT_BYTES = 8 << 20
RECOVERY_BATCH = 500


class Intake(Protocol):
    def receive(self, events: Sequence[Event]) -> int:
        """Store events durably; returns how many. Raises StoreUnavailable if it cannot."""
        ...

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what was received so far is in the store; False on timeout."""
        ...

    def recover(self) -> int:
        """Move what dead processes left in their journals into the store; returns how many."""
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

    def close(self) -> None:
        pass


class JournalIntake:
    """Events made durable in this process's journal, then moved to the store in batches."""

    def __init__(self, pipeline: Pipeline, directory: Path, *, linger: float = 0.02,
                 segment_bytes: int = SEGMENT_BYTES, retry_seconds: float = 0.5,
                 max_retry_seconds: float = 10.0) -> None:
        self.pipeline = pipeline
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._retry = (retry_seconds, max_retry_seconds)
        self._taken = 0  # every record up to this sequence number is in the store
        self._taken_changed = threading.Condition()
        self._stopping = threading.Event()
        self._gave_up = False  # a batch was left in the journal at shutdown
        self._journal: Journal[Event] | None = None
        self._pid: int | None = None
        self._open_lock = threading.Lock()
        self._moves: Batcher[list[tuple[Record, Event]]] = Batcher(
            self._move, linger=linger, name="deskbridge-intake")

    def receive(self, events: Sequence[Event]) -> int:
        if events:
            self._journal_here().append([(event_json_bytes(e), e) for e in events])
        return len(events)

    def _journal_here(self) -> Journal[Event]:
        with self._open_lock:
            if self._journal is None or self._pid != os.getpid():  # a fork's child starts anew
                self._taken = 0
                self._journal = Journal(self.directory, segment_bytes=self._segment_bytes,
                                        on_durable=self._durable, wait_taken=self._wait_taken)
                self._pid = os.getpid()
            return self._journal

    def _durable(self, entries: list[tuple[Record, Event]]) -> None:
        # Called by the journal in sequence order, so the store takes records in that order.
        self._moves.put(entries)

    def _move(self, batches: list[list[tuple[Record, Event]]]) -> None:
        events = [event for batch in batches for _, event in batch]
        records = [record.payload.decode() for batch in batches for record, _ in batch]
        delay = self._retry[0]
        while True:
            try:
                # This is a background thread already: the queue write need not leave it.
                self.pipeline.accept(events, records=records, queue_now=True)
                break
            except Exception as err:  # noqa: BLE001 -- whatever it is, the items must not be dropped
                level = logging.WARNING if isinstance(err, DeskbridgeError) else logging.ERROR
                log.log(level, "store not taking received items; retrying", extra={
                    "items": len(events), "retry_in": delay,
                    "error": f"{type(err).__name__}: {err}"})
                if self._stopping.wait(delay):
                    self._gave_up = True  # they stay in the journal, for recovery
                    return
                delay = min(self._retry[1], delay * 2)
        with self._taken_changed:
            self._taken = batches[-1][-1][0].seq
            self._taken_changed.notify_all()

    def _wait_taken(self, seq: int, timeout: float) -> bool:
        self._moves.flush(0)  # stop lingering
        with self._taken_changed:
            return self._taken_changed.wait_for(lambda: self._taken >= seq, timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        return self._moves.flush(timeout)

    def recover(self) -> int:
        """Move the records of every journal no live process holds into the store."""
        own = self._journal.paths if self._journal is not None else frozenset()
        moved = 0
        for path, fd in orphans(self.directory, own):
            try:
                moved += self._recover_segment(path, fd)
            except Exception as err:  # noqa: BLE001 -- one bad journal must not hold up the others
                log.error("could not recover a journal; it is kept", extra={
                    "journal": path.name, "error": f"{type(err).__name__}: {err}"})
            finally:
                os.close(fd)
        return moved

    def _recover_segment(self, path: Path, fd: int) -> int:
        records = [r.payload.decode() for r in read_segment(fd)]
        events = [from_record(jsontext.loads(r)) for r in records]
        for start in range(0, len(events), RECOVERY_BATCH):
            end = start + RECOVERY_BATCH
            self.pipeline.accept(events[start:end], records=records[start:end])
        path.unlink(missing_ok=True)
        if events:
            log.warning("recovered received items from a stopped process's journal",
                        extra={"journal": path.name, "items": len(events)})
        return len(events)

    def close(self) -> None:
        """Move what is waiting into the store; remove the journal if all of it got there."""
        with self._open_lock:
            journal, self._journal = self._journal, None
            own = journal is not None and self._pid == os.getpid()
        if journal is not None and own:
            journal.seal()  # a request still under way gets a 503, not a record left behind
        drained = self._moves.flush(10.0)
        self._stopping.set()
        self._moves.close()
        if journal is not None and own:
            journal.close(remove=drained and self._all_taken(journal))

    def _all_taken(self, journal: Journal[Event]) -> bool:
        return not self._gave_up and all(s.last_seq <= self._taken for s in journal.segments)


def make_intake(pipeline: Pipeline, *, journal: bool) -> Intake:
    """A journal beside the pipeline's SQLite store file (when `journal`); else straight in."""
    database = pipeline.store.sqlite_file
    if journal and database:
        return JournalIntake(pipeline, Path(f"{database}.intake"))
    return DirectIntake(pipeline)
