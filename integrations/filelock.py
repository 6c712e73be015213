"""One writer at a time on a SQLite file, across threads and processes, without sleeping.

SQLite makes a second writer wait in a busy handler that sleeps 1, 2, 5, 10… ms between
tries, so two processes that collide lose milliseconds each time. A blocking `flock` on a
lock file beside the database is woken by the kernel the moment the holder lets go.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext


class WriteLock:
    """An exclusive lock on `path`, shared by this process's threads and other processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads = threading.Lock()  # flock is per process: threads queue here first
        self._fd: int | None = None
        self._pid: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # reopened after a fork (gunicorn)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd


def held(lock: WriteLock | None) -> AbstractContextManager[None]:
    """`lock` held, or nothing to hold (a backend that needs no lock of ours)."""
    return lock.held() if lock is not None else nullcontext()
