"""Received X events reach the store through the journal: once each, and never lost."""

from __future__ import annotations

import base64
import errno
import json
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
from integrations.errors import PayloadError, StoreUnavailable
from integrations.events import Event, event_json_bytes
from integrations.intake import DirectIntake, JournalIntake, make_intake
from integrations.journal import Journal
from integrations.runtime import Runtime
from integrations.store import AcceptResult, ItemStatus, sqlite_file
from tests.factories import agent_reply, message

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


# Records no parser would pass (the web tier refuses them at the door), written into a
# journal directly, as a journal from an older deskbridge, or a disk, could hold them.
POISON = {
    "a lone surrogate in the id": event_json_bytes(message("1\ud800")),
    "an id longer than the column": event_json_bytes(message("1" * 161)),
    "a NUL in the id": event_json_bytes(message("1\x00")),
    "not JSON": b"not an event record",
    "not UTF-8": b"\xff\xfe{}",
    "not our record type": b'{"type": "tweet", "id": 1}',
    "JSON nested too deep to read": b"[" * 100_000 + b"]" * 100_000,
    "an id of the wrong type": b'{"type": "deletion", "channel": "x", "account": "1000", '
                               b'"message_id": 5, "author_id": "42", '
                               b'"deleted_at": "2026-11-22T09:00:00+00:00"}',
}


def messages_stored(rt: Runtime) -> list[str]:
    return sorted(i.provider_id for i in rt.store.list_items(limit=1000)
                  if i.event_type == "message")


def write_journal(directory: Path, payloads: list[bytes]) -> None:
    """A journal as a process that stopped would leave it."""
    left = Journal(directory, segment_bytes=64 << 20)
    left.append(payloads)
    left.close()


@pytest.mark.parametrize("poison", POISON)
def test_a_poison_record_is_set_aside_and_the_hundred_after_it_are_stored(
    runtime: Runtime, journal_dir: Path, poison: str,
) -> None:
    """Whatever is wrong with one record, the deliveries after it reach the store, and it is
    kept, bytes and reason, as a dead letter the admin sees."""
    ids = [str(1850000000000001000 + n) for n in range(100)]
    write_journal(journal_dir, [POISON[poison], *(event_json_bytes(message(i)) for i in ids)])
    assert runtime.intake.recover() == 101
    assert messages_stored(runtime) == sorted(ids)
    assert pending(runtime) == 100  # the set-aside record is not queued: it is dead already
    (dead,) = runtime.store.dead_letters()
    item = runtime.store.get_item(dead.item_id)
    assert item is not None and item.status == ItemStatus.DEAD and item.event_type == "rejected"
    assert base64.b64decode(item.payload["raw_base64"]) == POISON[poison]
    assert dead.reason == item.last_error == item.payload["reason"] and dead.reason
    assert journals(journal_dir) == []  # nothing left to hold up the next pass
    assert runtime.intake.recover() == 0 and len(runtime.store.dead_letters()) == 1


def test_the_reason_of_a_set_aside_record_names_what_is_wrong(
    runtime: Runtime, journal_dir: Path,
) -> None:
    write_journal(journal_dir, [POISON["a lone surrogate in the id"], POISON["not JSON"]])
    runtime.intake.recover()
    reasons = sorted(d.reason for d in runtime.store.dead_letters())
    assert reasons[0].startswith("not a readable event record: JSONDecodeError")
    assert reasons[1].startswith("the store cannot take it: PayloadError: message_id holds a "
                                 "lone surrogate")


def test_a_record_the_store_refuses_even_to_set_aside_is_kept_in_a_file(
    runtime: Runtime, journal_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last resort: a `.rejected` file beside the journal, one JSON line a record."""
    def refuse(*args: object) -> bool:
        raise PayloadError("the store refuses this too (test double)")

    monkeypatch.setattr(runtime.store, "set_aside", refuse)
    write_journal(journal_dir, [POISON["not JSON"], event_json_bytes(message("91"))])
    (segment,) = journals(journal_dir)
    assert runtime.intake.recover() == 2
    assert messages_stored(runtime) == ["91"]
    (line,) = segment.with_suffix(".rejected").read_text().splitlines()
    kept = json.loads(line)
    assert base64.b64decode(kept["raw_base64"]) == POISON["not JSON"]
    assert "JSONDecodeError" in kept["reason"] and "refuses this too" in kept["refused"]


def test_an_outage_while_finding_the_poison_sets_nothing_aside(
    runtime: Runtime, journal_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the record's own fault sets it aside: a store that goes down meanwhile only
    delays the batch, and the next pass takes it as it would have."""
    real, calls = runtime.pipeline.accept, []

    def accept(events: Sequence[Event], **kwargs: Any) -> AcceptResult:
        calls.append(len(events))
        if len(calls) == 2:  # the first of the one-by-one takes
            raise StoreUnavailable("store unavailable: database is locked (test double)")
        return real(events, **kwargs)

    monkeypatch.setattr(runtime.pipeline, "accept", accept)
    write_journal(journal_dir, [event_json_bytes(message("93")), POISON["a NUL in the id"],
                                event_json_bytes(message("94"))])
    with pytest.raises(StoreUnavailable):
        runtime.intake.recover()
    assert runtime.store.dead_letters() == []
    assert runtime.intake.recover() == 3
    assert messages_stored(runtime) == ["93", "94"] and len(runtime.store.dead_letters()) == 1


BAD_EVENTS = {
    "message_id": message("1" * 161),
    "message_id ": message("18\x0050"),
    "message_id  ": message("18\ud80050"),
    "conversation": agent_reply(ticket_id="1" * 300),
    "author.user_id": message("1850000000000000001", author_id="4" * 65),
}


@pytest.mark.parametrize("field", BAD_EVENTS)
def test_a_value_the_store_cannot_hold_is_refused_at_the_door_on_either_store(
    store_url: str, tmp_path: Path, make_config: Callable[..., Path], field: str,
) -> None:
    """On SQLite (journal) and PostgreSQL (straight in) alike: a PayloadError naming the
    field (400 to the sender), never StoreUnavailable (a 503 X retries for hours), and the
    deliveries around it are stored."""
    rt = Runtime(load_settings(make_config(store_url, f"sqlite:///{tmp_path}/queue.db")))
    try:
        rt.upgrade_schema()
        with pytest.raises(PayloadError, match=f"^{field.strip()}") as refused:
            rt.intake.receive([BAD_EVENTS[field]])
        assert not isinstance(refused.value, StoreUnavailable)
        ids = [str(1850000000000002000 + n) for n in range(100)]
        assert rt.intake.receive([message(i) for i in ids]) == 100
        assert rt.intake.flush()
        assert messages_stored(rt) == sorted(ids) and rt.store.dead_letters() == []
    finally:
        rt.close()


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
    long_ago = time.time() - 3600  # a segment being made this instant is left alone
    os.utime(unnamed, (long_ago, long_ago))
    assert runtime.intake.recover() == 0
    assert not stray.exists() and not unnamed.exists()


def test_readyz_says_not_ready_once_received_events_wait_too_long(
    runtime: Runtime, journal_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mover that cannot move: /readyz turns 503 once the oldest waiting record is older
    than the bound, says how many wait and why, and is ready again once they moved."""
    from webhook_server import create_app

    wall = [time.time()]
    runtime.intake = JournalIntake(runtime.pipeline, journal_dir, stall_seconds=60,
                                   wall=lambda: wall[0])
    client = create_app(runtime.settings, runtime=runtime).test_client()
    up = threading.Event()
    store_down_until(runtime, up, monkeypatch)
    runtime.intake.receive([message("101"), message("102")])
    with pytest.raises(StoreUnavailable):
        runtime.intake.recover()
    answer = client.get("/readyz")
    assert answer.status_code == 200  # waiting, but not for long yet
    assert answer.json is not None and answer.json["intake"]["waiting_records"] == 2

    wall[0] += 61
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json is not None
    intake = answer.json["intake"]
    assert intake["ok"] is False and intake["waiting_segments"] == 1
    assert intake["waiting_records"] == 2 and intake["oldest_wait_seconds"] >= 61
    assert "database is locked" in intake["last_error"]

    up.set()
    assert runtime.intake.recover() == 2
    answer = client.get("/readyz")
    assert answer.status_code == 200 and answer.json is not None
    assert answer.json["intake"]["waiting_records"] == 0
    assert "last_error" not in answer.json["intake"]
    wall[0] += 3600  # an idle journal never looks stalled
    assert client.get("/readyz").status_code == 200


def test_readyz_sees_a_stall_at_once_in_a_journal_last_written_long_ago(
    runtime: Runtime, journal_dir: Path,
) -> None:
    """After a restart, a record that waited since before it counts from its segment's
    last write: no need to watch it for the whole bound first."""
    write_journal(journal_dir, [event_json_bytes(message("111"))])
    later = time.time() + 120
    intake = JournalIntake(runtime.pipeline, journal_dir, stall_seconds=60, wall=lambda: later)
    health = intake.health()
    assert health["ok"] is False and health["oldest_wait_seconds"] >= 119
