"""Received X events reach the store through the journal: once each, and never lost."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from integrations.config import load_settings
from integrations.errors import StoreUnavailable
from integrations.events import Event
from integrations.intake import DirectIntake, JournalIntake, make_intake
from integrations.runtime import Runtime
from integrations.store import AcceptResult, sqlite_file
from tests.factories import message

ROOT = Path(__file__).resolve().parents[1]

# A web process (it journals, and moves nothing) that says "ok" once it has answered for what
# it received, then waits to be killed. argv: config file, journal directory, message ids.
RECEIVE_AND_HANG = """
import sys, time
from pathlib import Path
from integrations.config import load_settings
from integrations.intake import JournalIntake
from integrations.runtime import Runtime
from tests.factories import message
runtime = Runtime(load_settings(sys.argv[1]))
intake = JournalIntake(runtime.pipeline, Path(sys.argv[2]), moves=False)
ids = sys.argv[3:]
received = intake.receive([message(i) for i in ids[:-1]]) + intake.receive([message(ids[-1])])
print("ok", received, flush=True)
time.sleep(3600)
"""


@pytest.fixture
def config(tmp_path: Path, make_config: Callable[..., Path]) -> Path:
    return make_config(f"sqlite:///{tmp_path}/store.db", f"sqlite:///{tmp_path}/queue.db")


@pytest.fixture
def runtime_for(config: Path) -> Iterator[Callable[[], Runtime]]:
    """Runtimes on one SQLite store file (each as a fresh process would build it)."""
    made: list[Runtime] = []

    def build() -> Runtime:
        rt = Runtime(load_settings(config))
        rt.upgrade_schema()
        made.append(rt)
        return rt

    yield build
    for rt in made:
        rt.close()


@pytest.fixture
def runtime(runtime_for: Callable[[], Runtime]) -> Runtime:
    return runtime_for()


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "store.db.intake"


def stored_ids(rt: Runtime) -> list[str]:
    return sorted(item.provider_id for item in rt.store.list_items(limit=1000))


def pending(rt: Runtime) -> int:
    rt.queue.flush_handoff()
    return rt.queue.check()["pending"]


def journals(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.journal"))


def store_down_until(rt: Runtime, up: threading.Event | None,
                     monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make rt's store refuse every accept until `up` is set (never, if None).

    Returns an event set once an accept has been refused.
    """
    refused = threading.Event()
    real = rt.pipeline.accept

    def accept(events: Sequence[Event], **kwargs: Any) -> AcceptResult:
        if up is None or not up.is_set():
            refused.set()
            raise StoreUnavailable("store unavailable: database is locked (test double)")
        return real(events, **kwargs)

    monkeypatch.setattr(rt.pipeline, "accept", accept)
    return refused


def test_the_runtime_on_a_sqlite_file_journals_beside_it(
    runtime: Runtime, journal_dir: Path,
) -> None:
    """A deskbridge on the default SQLite store answers X from its journal."""
    assert isinstance(runtime.intake, JournalIntake)
    assert runtime.intake.directory == journal_dir


def test_received_events_are_stored_once_and_queued(runtime: Runtime) -> None:
    """What X was answered 200 for is in the store, and workers are told about it."""
    events = [message("1850000000000000001"), message("1850000000000000002", author_id="7")]
    assert runtime.intake.receive(events) == 2
    assert runtime.intake.flush()
    assert stored_ids(runtime) == ["1850000000000000001", "1850000000000000002"]
    assert sorted((item.event for item in runtime.store.list_items()),
                  key=lambda e: e.natural_key) == events
    assert pending(runtime) == 2


def test_the_same_event_received_twice_is_stored_once(runtime: Runtime) -> None:
    """X redelivering an event does not make a second ticket."""
    runtime.intake.receive([message("11")])
    runtime.intake.receive([message("11"), message("12")])
    assert runtime.intake.flush()
    assert stored_ids(runtime) == ["11", "12"]
    assert pending(runtime) == 2


@pytest.mark.slow
def test_events_of_a_killed_process_are_recovered_by_the_next(
    config: Path, runtime_for: Callable[[], Runtime], journal_dir: Path,
) -> None:
    """A process killed right after answering 200 loses nothing: the next one stores it all."""
    rt = runtime_for()
    ids = [str(1850000000000000100 + n) for n in range(6)]
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVE_AND_HANG, str(config), str(journal_dir), *ids],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ok 6\n", proc.stderr.read() if proc.stderr else line
        assert stored_ids(rt) == []  # nothing was moved: only the journal has them
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(journals(journal_dir)) == 1

    assert rt.intake.recover() == 6
    assert stored_ids(rt) == sorted(ids)
    assert pending(rt) == 6
    assert journals(journal_dir) == []
    assert rt.intake.recover() == 0 and stored_ids(rt) == sorted(ids)


def test_a_live_journal_is_read_where_the_last_mover_stopped_and_left_in_place(
    runtime_for: Callable[[], Runtime], journal_dir: Path,
) -> None:
    """A mover takes what a live web process wrote, once, and leaves it its file."""
    writer, other = runtime_for(), runtime_for()
    writer.intake.receive([message("31")])
    assert other.intake.recover() == 1
    assert stored_ids(other) == ["31"]
    assert len(journals(journal_dir)) == 1  # still being written
    writer.intake.receive([message("32")])
    assert other.intake.recover() == 1  # only the new one: where to go on from is shared
    assert writer.intake.flush()  # nothing of its own is left to move
    assert other.intake.recover() == 0
    assert stored_ids(other) == ["31", "32"] and pending(other) == 2


def test_a_worker_moves_what_a_web_process_journals_while_it_runs(
    runtime_for: Callable[[], Runtime], journal_dir: Path,
) -> None:
    """`deskbridge serve` only journals; the worker's mover stores it within moments, and
    removes each segment the web process is done with."""
    web = runtime_for()
    web_intake = JournalIntake(web.pipeline, journal_dir, moves=False,
                               segment_bytes=8 << 10)  # a few records a segment
    worker = runtime_for()
    stop = threading.Event()
    worker.intake.start(stop)
    try:
        ids = [str(1850000000000000200 + n) for n in range(40)]
        for i in ids:
            web_intake.receive([message(i)])
        deadline = time.monotonic() + 10
        while stored_ids(worker) != sorted(ids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stored_ids(worker) == sorted(ids)
        assert pending(worker) == 40
        deadline = time.monotonic() + 10
        while len(journals(journal_dir)) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(journals(journal_dir)) == 1  # the one it writes; the full ones are gone
        web_intake.close()  # its last segment is released: the mover takes and removes it
        deadline = time.monotonic() + 10
        while journals(journal_dir) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert journals(journal_dir) == []
        assert list(journal_dir.glob("*.moved")) == []
    finally:
        stop.set()
    assert stored_ids(worker) == sorted(ids)  # each once


def test_events_received_while_the_store_is_down_reach_it_when_it_is_back(
    runtime: Runtime, journal_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store outage delays events but loses none, and stores none twice."""
    up = threading.Event()
    refused = store_down_until(runtime, up, monkeypatch)
    intake = JournalIntake(runtime.pipeline, journal_dir, retry_seconds=0.01,
                           max_retry_seconds=0.05)
    stop = threading.Event()
    intake.start(stop)
    assert intake.receive([message("21"), message("22")]) == 2  # answered while down
    assert refused.wait(5)
    assert intake.receive([message("23")]) == 1
    assert not intake.flush(timeout=0.2)  # not in the store yet
    assert stored_ids(runtime) == []

    up.set()
    assert intake.flush(timeout=10)
    assert stored_ids(runtime) == ["21", "22", "23"]
    assert pending(runtime) == 3
    intake.close()
    assert journals(journal_dir) == []


def test_close_moves_what_is_waiting_and_removes_the_journal(
    runtime: Runtime, journal_dir: Path,
) -> None:
    """A clean stop stores everything received and leaves no journal behind."""
    intake = JournalIntake(runtime.pipeline, journal_dir)
    intake.receive([message("41"), message("42")])
    assert len(journals(journal_dir)) == 1
    intake.close()
    assert stored_ids(runtime) == ["41", "42"]
    assert journals(journal_dir) == []


def test_a_web_process_stopping_leaves_its_journal_to_the_worker(
    runtime_for: Callable[[], Runtime], journal_dir: Path,
) -> None:
    web = runtime_for()
    intake = JournalIntake(web.pipeline, journal_dir, moves=False)
    intake.receive([message("45")])
    intake.close()
    assert stored_ids(web) == [] and len(journals(journal_dir)) == 1
    assert runtime_for().intake.recover() == 1
    assert stored_ids(web) == ["45"] and journals(journal_dir) == []


def test_close_keeps_the_journal_when_the_store_never_took_it(
    runtime_for: Callable[[], Runtime], journal_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping while the store is down keeps the events for the next process to store."""
    down = runtime_for()
    intake = JournalIntake(down.pipeline, journal_dir, retry_seconds=0.01,
                           max_retry_seconds=0.05, close_seconds=0.3)
    intake.receive([message("51"), message("52")])
    refused = store_down_until(down, None, monkeypatch)
    intake.close()
    assert refused.is_set()  # it did try, for close_seconds
    assert len(journals(journal_dir)) == 1
    assert stored_ids(down) == []

    later = runtime_for()  # its store works
    assert later.intake.recover() == 2
    assert stored_ids(later) == ["51", "52"]
    assert journals(journal_dir) == []


def test_an_unexpected_error_while_storing_loses_nothing(
    runtime_for: Callable[[], Runtime], journal_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error that is not a DeskbridgeError (here EMFILE) delays an event, never drops it."""
    rt = runtime_for()
    real, calls = rt.pipeline.accept, []

    def accept(events: Sequence[Event], **kwargs: Any) -> AcceptResult:
        calls.append(len(events))
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(events, **kwargs)

    monkeypatch.setattr(rt.pipeline, "accept", accept)
    intake = JournalIntake(rt.pipeline, journal_dir, retry_seconds=0.01)
    intake.receive([message("71")])
    assert intake.flush()
    intake.receive([message("72")])
    assert intake.flush()
    intake.close()
    runtime_for().intake.recover()  # whatever the journal still holds
    assert stored_ids(rt) == ["71", "72"]


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://",
                                 "postgresql://deskbridge@127.0.0.1:5432/deskbridge"])
def test_only_a_sqlite_file_store_gets_a_journal(url: str) -> None:
    """Where commits are cheap, or there is no file to journal beside, events go straight in."""
    assert sqlite_file(url) is None


def test_a_store_configured_without_a_journal_takes_events_straight_in(runtime: Runtime) -> None:
    intake = make_intake(runtime.pipeline, journal=False)
    assert isinstance(intake, DirectIntake)


def test_a_sqlite_file_store_gets_a_journal_beside_its_file(
    runtime: Runtime, tmp_path: Path,
) -> None:
    """The journal lives next to the database file it feeds."""
    intake = make_intake(runtime.pipeline, journal=True)
    assert isinstance(intake, JournalIntake)
    assert intake.directory == Path(f"{tmp_path}/store.db.intake")


def test_direct_intake_stores_before_returning(runtime: Runtime) -> None:
    """Without a journal, receive() returns once the events are in the store."""
    intake = DirectIntake(runtime.pipeline)
    assert intake.receive([message("61"), message("61")]) == 2
    assert stored_ids(runtime) == ["61"]


def test_a_journal_that_cannot_be_read_does_not_hold_up_the_others(
    runtime: Runtime, journal_dir: Path,
) -> None:
    """An unreadable journal is kept and reported; the next one is still recovered."""
    from integrations.events import event_json
    from integrations.journal import Journal

    for payload in (b"not an event record", event_json(message("81")).encode()):
        left = Journal(journal_dir, segment_bytes=1 << 20)
        left.append([payload])
        left.close()  # as a process that died would leave it
    assert runtime.intake.recover() == 1
    assert stored_ids(runtime) == ["81"]
    (kept,) = journals(journal_dir)  # the unreadable segment
    assert b"not an event record" in kept.read_bytes()
    assert runtime.intake.recover() == 0 and journals(journal_dir) == [kept]


def test_the_first_pass_removes_what_a_process_killed_mid_step_left(
    runtime: Runtime, journal_dir: Path,
) -> None:
    """A `.moved` whose segment is gone (a mover killed between its two removals) and a
    segment never named (a writer killed while making it) are tidied away."""
    journal_dir.mkdir()
    stray = journal_dir / "999999-dead0000-00000001.moved"
    stray.write_bytes(b"\0" * 8)
    unnamed = journal_dir / "999999-dead0000-00000002.journal.new"
    unnamed.write_bytes(b"")
    assert runtime.intake.recover() == 0
    assert not stray.exists() and not unnamed.exists()
