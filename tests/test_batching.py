"""The background batcher behind log writes and the queue hand-off."""

from __future__ import annotations

import logging
import threading

import pytest

from integrations.batching import Batcher


def test_flush_returns_once_everything_put_has_been_through_the_sink() -> None:
    seen: list[int] = []
    batcher: Batcher[int] = Batcher(seen.extend, linger=0.01, name="test")
    for n in range(500):
        batcher.put(n)
    assert batcher.flush()
    assert seen == list(range(500))  # all of them, in order
    batcher.close()


def test_items_put_together_reach_the_sink_together() -> None:
    calls: list[list[int]] = []
    batcher: Batcher[int] = Batcher(calls.append, linger=0.2, name="test")
    for n in range(200):
        batcher.put(n)
    assert batcher.flush()
    assert len(calls) < 200 and [n for c in calls for n in c] == list(range(200))
    batcher.close()


def test_a_failing_sink_is_logged_and_the_next_batch_still_goes_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    def sink(batch: list[str]) -> None:
        if "bad" in batch:
            raise RuntimeError("backend down")
        seen.extend(batch)

    batcher: Batcher[str] = Batcher(sink, linger=0.01, name="test")
    with caplog.at_level(logging.ERROR, logger="deskbridge.batching"):
        batcher.put("bad")
        assert batcher.flush()
        batcher.put("good")
        assert batcher.flush()
    assert seen == ["good"]
    assert "batch sink failed" in caplog.text and "backend down" in caplog.text
    batcher.close()


def test_close_writes_what_is_waiting() -> None:
    seen: list[int] = []
    gate = threading.Event()

    def sink(batch: list[int]) -> None:
        gate.wait(5)
        seen.extend(batch)

    batcher: Batcher[int] = Batcher(sink, linger=0.01, name="test")
    batcher.put(1)
    batcher.put(2)
    gate.set()
    batcher.close()
    assert seen == [1, 2]


def test_put_never_waits_for_a_slow_sink() -> None:
    release = threading.Event()
    batcher: Batcher[int] = Batcher(lambda batch: release.wait(5) and None, linger=0.0,
                                    name="test")
    batcher.put(1)
    done = threading.Event()
    threading.Thread(target=lambda: (batcher.put(2), done.set())).start()
    assert done.wait(1)  # the sink is still stuck on the first item
    release.set()
    assert batcher.flush()
    batcher.close()
