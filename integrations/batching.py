"""Work handed off by request threads and done in batches on a thread of its own.

A request thread that logs a line or tells the queue about a stored item should not pay for
the write, nor for waking another thread each time: on a busy web worker every wake-up is a
context switch and a fight for the GIL. `Batcher.put` only appends to a list. The batching
thread is woken by the first item after an idle spell, lets more gather for `linger` seconds
and hands them all to its sink at once; under load it wakes once per `linger`, not once per
item. `flush()` waits until everything put so far has been through the sink.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("deskbridge.batching")


class Batcher(Generic[T]):
    """Hands what `put` collects to `sink(batch)` on a background thread, `linger` apart.

    A sink that raises loses nothing it has not said so about: it is the sink's job to log
    what it could not do (the callers' items are already safe elsewhere, see the uses).
    Safe across fork: a forked child starts with no items, fresh locks and no thread (one is
    started by its first `put`). At exit, and on `close()`, what is waiting goes through the
    sink.
    """

    def __init__(self, sink: Callable[[list[T]], None], *, linger: float, name: str) -> None:
        self._sink = sink
        self._linger = linger
        self._name = name
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._items: list[T] = []
        self._markers: list[threading.Event] = []
        self._wake = threading.Event()
        self._hurry = threading.Event()  # flush or close: stop lingering
        self._idle = True  # no wake-up is pending: the next put must wake the thread
        self._closing = False
        self._thread: threading.Thread | None = None

    def put(self, item: T) -> None:
        """Queue `item` for the sink; never blocks on the sink."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._items.append(item)
            wake, self._idle = self._idle, False
        if wake:
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything put so far has been through the sink; False on timeout."""
        with self._lock:
            if self._thread is None:
                return True
            done = threading.Event()
            self._markers.append(done)
            self._idle = False
        self._hurry.set()
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Put what is waiting through the sink and stop the thread (a later `put` starts
        another)."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._closing = True
        self._hurry.set()
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():  # a sink stuck past the timeout keeps its thread
            return
        with self._lock:
            self._thread, self._closing = None, False
            left, self._items = self._items, []  # put while the thread was ending
        self._drain(left)

    def _drain(self, items: list[T]) -> None:
        if items:
            try:
                self._sink(items)
            except Exception:  # the thread must outlive a failing sink
                log.exception("batch sink failed", extra={"batcher": self._name})

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._hurry.wait(self._linger)  # let more items gather
            with self._lock:
                self._wake.clear()
                self._hurry.clear()
                items, self._items = self._items, []
                markers, self._markers = self._markers, []
                self._idle = True
                closing = self._closing
            self._drain(items)
            for marker in markers:
                marker.set()
            if closing:
                with self._lock:
                    if not self._items and not self._markers:
                        return
                self._wake.set()


# Every batcher alive in this process: reset in a forked child, drained at exit.
_LIVE: weakref.WeakSet[Batcher[Any]] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for batcher in list(_LIVE):
        batcher._reset()


def _close_all() -> None:
    for batcher in list(_LIVE):
        batcher.close()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_close_all)
