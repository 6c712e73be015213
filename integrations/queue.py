"""The task queue: huey on SQLite by default, on Redis by URL.

The queue only carries item ids and when to look at them again. What an item is, how often
it was tried and whether it is done lives in the store, so a queue that loses a task (Redis
restarted, a SQLite file deleted) loses nothing: the sweeper sends the item round again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from sqlalchemy.engine import make_url

from integrations.errors import ConfigurationError, DeskbridgeError

log = logging.getLogger("deskbridge.queue")

PROCESS_TASK = "deskbridge.process_item"


class QueueUnavailable(DeskbridgeError):
    """The queue's backend could not be reached."""


def create_huey(url: str, name: str = "deskbridge") -> Huey:
    """A huey instance for a queue URL: `sqlite:///file.db` or `redis://host:port/db`.

    Raises ConfigurationError for any other scheme.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisHuey(name, url=url, results=False)
    if scheme == "sqlite":
        filename = make_url(url).database
        if not filename or filename == ":memory:":
            raise ConfigurationError("queue.url: a SQLite queue needs a file, not memory")
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        # fsync: a task handed to the queue survives a power cut, like the item itself.
        return SqliteHuey(name, filename=filename, results=False, fsync=True, timeout=30)
    raise ConfigurationError(f"queue.url: unsupported scheme {scheme!r} (use sqlite or redis)")


class TaskQueue:
    """Sends item ids to workers, now or not before a given time."""

    def __init__(self, huey: Huey) -> None:
        self.huey = huey
        self._process: Callable[[int], Any] | None = None
        self._process_task = huey.task(name=PROCESS_TASK)(self._run_process)

    def bind(self, process: Callable[[int], Any]) -> None:
        """Say what a worker does with an item id."""
        self._process = process

    def enqueue(self, item_id: int, at: datetime | None = None, now: datetime | None = None) -> None:
        """Hand an item to the workers, at once or not before `at`.

        `now` is the caller's clock; the delay `at - now` is what huey waits.
        Raises QueueUnavailable if the backend cannot take it.
        """
        try:
            if at is None or now is None or at <= now:
                self._process_task(item_id)
            else:
                self._process_task.schedule(args=(item_id,), delay=(at - now).total_seconds())
        except Exception as err:  # huey raises the backend's own errors (redis, sqlite3)
            raise QueueUnavailable(f"queue unavailable: {type(err).__name__}: {err}") from err

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
