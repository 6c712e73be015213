"""Group commit: writes that arrive together share one transaction (and one fsync).

While one thread (the leader) commits a batch, the writes that arrive meanwhile wait; when it
is done, one of them leads the next batch with all of them in it. Alone, a write is its own
batch, so an idle server pays no extra latency; under load the cost of a commit is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Request(Generic[In, Out]):
    work: In
    done: bool = False
    result: Out | None = None
    error: BaseException | None = None
    taken: bool = field(default=False)


class GroupCommitter(Generic[In, Out]):
    """Runs `commit(batch) -> results` (one result per input, in order) for batched callers."""

    def __init__(self, commit: Callable[[Sequence[In]], Sequence[Out]]) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._pending: list[_Request[In, Out]] = []
        self._leading = False

    def submit(self, work: In) -> Out:
        """Commit `work` (with whatever else is waiting); raises what the commit raised."""
        request: _Request[In, Out] = _Request(work)
        with self._cond:
            self._pending.append(request)
            while not request.done and (self._leading or request.taken):
                self._cond.wait()
            if request.done:
                return self._outcome(request)
            self._leading = True
            batch, self._pending = self._pending, []
            for r in batch:
                r.taken = True
        self._lead(batch)
        return self._outcome(request)

    def _lead(self, batch: list[_Request[In, Out]]) -> None:
        try:
            results = self._commit([r.work for r in batch])
            for r, result in zip(batch, results, strict=True):
                r.result = result
        except BaseException as err:  # noqa: BLE001 -- every writer in the batch must learn it
            for r in batch:
                r.error = err
        with self._cond:
            for r in batch:
                r.done = True
            self._leading = False
            self._cond.notify_all()

    @staticmethod
    def _outcome(request: _Request[In, Out]) -> Out:
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]  # set by the leader
