"""The background batcher behind log writes and the queue hand-off."""

from __future__ import annotations

import json
import logging
import os
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
    batcher: Batcher[int] = Batcher(seen.extend, linger=60, name="test")  # would wait a minute
    batcher.put(1)
    batcher.put(2)
    batcher.close()
    assert seen == [1, 2]


def test_a_forked_child_starts_empty_with_a_thread_of_its_own() -> None:
    seen: list[str] = []
    batcher: Batcher[str] = Batcher(seen.extend, linger=60, name="test")
    batcher.put("parent's")  # waiting in the parent when it forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own items only, and flush works (a thread of its own)
        batcher.put("child's")
        ok = batcher.flush(timeout=5)
        os.write(write, json.dumps({"ok": ok, "seen": seen}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child == {"ok": True, "seen": ["child's"]}
    assert batcher.flush() and seen == ["parent's"]
    batcher.close()


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
