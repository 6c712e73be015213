"""The task queue: huey on SQLite by default, on Redis by URL.

The queue only carries item ids and when to look at them again. What an item is, how often
it was tried and whether it is done lives in the store, so a queue that loses a task (Redis
restarted, a SQLite file deleted) loses nothing: the sweeper sends the item round again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.storage import SqliteStorage

from integrations.batching import Batcher
from integrations.errors import ConfigurationError, DeskbridgeError
from integrations.filelock import WriteLock, held
from integrations.store import sqlite_file

log = logging.getLogger("deskbridge.queue")

PROCESS_TASK = "deskbridge.process_item"


class QueueUnavailable(DeskbridgeError):
    """The queue's backend could not be reached."""


class BatchSqliteStorage(SqliteStorage):  # type: ignore[misc]
    """huey's SQLite storage, able to take many tasks in one transaction."""

    def enqueue_many(self, datas: list[bytes]) -> None:
        # The same row huey's own `enqueue` writes, for many tasks at once.
        with self.db(commit=True) as cursor:
            cursor.executemany("insert into task (queue, data, priority) values (?, ?, ?)",
                               [(self.name, self.to_blob(d), 0) for d in datas])


def create_huey(url: str, name: str = "deskbridge") -> Huey:
    """A huey instance for a queue URL: `sqlite:///file.db` or `redis://host:port/db`.

    Raises ConfigurationError for any other scheme.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisHuey(name, url=url, results=False)
    if scheme == "sqlite":
        filename = sqlite_file(url)
        if not filename:
            raise ConfigurationError("queue.url: a SQLite queue needs a file, not memory")
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        # No fsync: the queue only carries item ids. The item itself is already on disk in
        # the store, and a task lost in a crash is found again by the sweeper.
        return SqliteHuey(name, filename=filename, results=False, fsync=False, timeout=30,
                          storage_class=BatchSqliteStorage)
    raise ConfigurationError(f"queue.url: unsupported scheme {scheme!r} (use sqlite or redis)")


class TaskQueue:
    """Sends item ids to workers, now or not before a given time."""

    def __init__(self, huey: Huey) -> None:
        self.huey = huey
        filename = getattr(huey.storage, "filename", None)  # SQLite queues only
        self._write_lock = WriteLock(f"{filename}.lock") if filename else None
        self._process: Callable[[int], Any] | None = None
        self._process_task = huey.task(name=PROCESS_TASK)(self._run_process)
        # The item ids that many requests hand over go in one queue transaction.
        self._handoff: Batcher[list[int]] = Batcher(self._send_handed_over, linger=0.01,
                                                    name="deskbridge-handoff")

    def bind(self, process: Callable[[int], Any]) -> None:
        """Say what a worker does with an item id."""
        self._process = process

    def enqueue(self, item_id: int, at: datetime | None = None, now: datetime | None = None) -> None:
        """Hand an item to the workers, at once or not before `at`.

        `now` is the caller's clock; the delay `at - now` is what huey waits.
        Raises QueueUnavailable if the backend cannot take it.
        """
        try:
            with held(self._write_lock):
                if at is None or now is None or at <= now:
                    self._process_task(item_id)
                else:
                    delay = (at - now).total_seconds()
                    self._process_task.schedule(args=(item_id,), delay=delay)
        except Exception as err:  # huey raises the backend's own errors (redis, sqlite3)
            raise QueueUnavailable(f"queue unavailable: {type(err).__name__}: {err}") from err

    def hand_over(self, item_ids: list[int]) -> None:
        """Hand stored items to the workers without waiting for the queue (see the module doc).

        The queue write happens on a background thread, together with other requests' items,
        within `linger` seconds. If it fails, or the process dies first, the items are still in
        the store and the sweeper queues them. `flush_handoff()` waits for it.
        """
        if item_ids:
            self._handoff.put(item_ids)

    def send(self, item_ids: list[int]) -> None:
        """Queue stored items now, in one queue write; a queue that is down is only logged
        (the items are in the store, and the sweeper queues them)."""
        if item_ids:
            self._send_handed_over([item_ids])

    def close(self) -> None:
        """Send what was handed over, then close the backend."""
        self._handoff.close()
        self.huey.storage.close()

    def flush_handoff(self, timeout: float = 5.0) -> bool:
        """Wait until every item handed over so far has reached the queue (or failed to)."""
        return self._handoff.flush(timeout)

    def _send_handed_over(self, batches: list[list[int]]) -> None:
        try:
            self._enqueue_batch(batches)
        except Exception as err:  # noqa: BLE001 -- huey raises the backend's own errors (redis, sqlite3)
            log.warning("queue down; the sweeper will send them", extra={
                "item_ids": [i for b in batches for i in b],
                "error": f"{type(err).__name__}: {err}"})

    def _enqueue_batch(self, batches: Sequence[list[int]]) -> None:
        tasks = [self._process_task.s(item_id) for batch in batches for item_id in batch]
        storage = self.huey.storage
        with held(self._write_lock):
            if isinstance(storage, BatchSqliteStorage):
                storage.enqueue_many([self.huey.serialize_task(t) for t in tasks])
            else:
                for task in tasks:
                    self.huey.enqueue(task)

    def check(self) -> dict[str, int]:
        """Prove the backend answers; returns its pending and scheduled counts.

        Raises QueueUnavailable otherwise.
        """
        try:
            return {"pending": self.huey.pending_count(), "scheduled": self.huey.scheduled_count()}
        except Exception as err:
            raise QueueUnavailable(f"queue not ready: {type(err).__name__}: {err}") from err

    def run_pending(self, limit: int = 1000, as_of: datetime | None = None) -> int:
        """Run queued tasks in this thread until none is left (for tests and one-shot runs).

        `as_of` runs delayed tasks as if that time had come (the store still decides whether
        their item is due); by default a delayed task goes back to huey's schedule.
        """
        self.flush_handoff()
        ran = 0
        timestamp = as_of.astimezone(UTC).replace(tzinfo=None) if as_of else None
        while ran < limit:
            task = self.huey.dequeue()
            if task is None:
                break
            self.huey.execute(task, timestamp=timestamp)
            ran += 1
        return ran

    def promote_scheduled(self, until: datetime | None = None) -> int:
        """Move scheduled tasks due by `until` (default: now) onto the queue."""
        tasks = self.huey.read_schedule(until.astimezone(UTC).replace(tzinfo=None) if until else None)
        for task in tasks:
            self.huey.enqueue(task)
        return len(tasks)

    def _run_process(self, item_id: int) -> None:
        if self._process is None:
            raise ConfigurationError("queue has no item processor bound")
        self._process(item_id)
