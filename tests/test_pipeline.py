"""The pipeline against a recording test double of the helpdesk interface."""

from __future__ import annotations

import dataclasses
import errno
import logging
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from integrations.config import Settings
from integrations.errors import (
    ConfigurationError,
    PayloadError,
    ProviderError,
    RateLimited,
    StoreUnavailable,
)
from integrations.events import MessageKind, SocialMessage, from_record, to_record
from integrations.pipeline import SAFE_TEXT_CHARS, Permanent, RetryPolicy, written_key
from integrations.queue import QueueUnavailable
from integrations.runtime import Runtime
from integrations.store import DeliveryStatus, ItemStatus
from tests.conftest import FakeClock
from tests.doubles import RecordingHelpdesk, TextRecordingHelpdesk
from tests.factories import agent_reply, message

FAR_FUTURE = datetime.now(UTC) + timedelta(days=365)


@pytest.fixture
def helpdesk(tmp_path: Path) -> RecordingHelpdesk:
    return RecordingHelpdesk("hd", tmp_path / "writes.jsonl")


@pytest.fixture
def runtime_for(
    tmp_path: Path, make_settings: Callable[..., Settings], helpdesk: RecordingHelpdesk,
    clock: FakeClock,
) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def build(store_url: str | None = None, queue_url: str | None = None, *,
              desk: RecordingHelpdesk | None = None, **queue: object) -> Runtime:
        settings = make_settings(store_url or f"sqlite:///{tmp_path}/store.db",
                                 queue_url or f"sqlite:///{tmp_path}/queue.db", **queue)
        rt = Runtime(settings, helpdesks={"hd": desk or helpdesk}, clock=clock,
                     rng=random.Random(7))
        rt.upgrade_schema()
        made.append(rt)
        return rt

    yield build
    for rt in made:
        rt.close()


def drain(rt: Runtime) -> int:
    """Run everything queued, including scheduled retries, in this thread."""
    ran = 0
    while True:
        rt.queue.promote_scheduled(FAR_FUTURE)
        step = rt.queue.run_pending(as_of=FAR_FUTURE)
        if not step:
            return ran
        ran += step


def test_same_item_accepted_three_times_is_processed_once(
    backend: tuple[str, str], runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk,
) -> None:
    rt = runtime_for(*backend)
    for _ in range(3):
        rt.pipeline.accept([message("5")])
    drain(rt)
    assert len(rt.store.list_items()) == 1
    assert [w["op"] for w in helpdesk.writes()] == ["create_ticket"]
    (item,) = rt.store.list_items()
    assert item.status == ItemStatus.DONE and item.attempts == 1


def test_processing_a_done_item_again_does_nothing(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk,
) -> None:
    rt = runtime_for()
    (item_id,) = rt.pipeline.accept([message("5")]).new_ids
    assert rt.pipeline.process(item_id) == "done"
    assert rt.pipeline.process(item_id) == "skipped"
    assert len(helpdesk.writes()) == 1


def test_reply_in_thread_lands_on_the_same_ticket(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk,
) -> None:
    rt = runtime_for()
    rt.pipeline.accept([message("10", author_id="42")])
    drain(rt)
    rt.pipeline.accept([message("11", author_id="42", kind=MessageKind.REPLY, in_reply_to_id="10")])
    drain(rt)
    create, comment = helpdesk.writes()
    assert (create["op"], comment["op"]) == ("create_ticket", "comment")
    assert comment["ticket_id"] == create["ticket_id"]
    link = rt.store.link_for_message("x", "1000", "11")
    assert link is not None and link.rule == "thread" and link.ticket_id == create["ticket_id"]


def test_own_messages_and_unmapped_accounts_write_nothing(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk,
) -> None:
    rt = runtime_for()
    rt.pipeline.accept([message("1", is_own=True), message("2", account="999"),
                        message("3", kind=MessageKind.RETWEET)])
    drain(rt)
    assert helpdesk.writes() == []
    outcomes = sorted(i.outcome or "" for i in rt.store.list_items())
    assert outcomes[0].startswith("ignore: a retweet")
    assert outcomes[1].startswith("ignore: sent by the account itself")
    assert outcomes[2] == "stored only: no mapping for x account 999"


def test_failures_back_off_exponentially_with_jitter(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk, clock: FakeClock,
) -> None:
    rt = runtime_for(backoff_base_seconds=10.0, max_attempts=5)
    helpdesk.failures = [ProviderError("zendesk", "unavailable", status=503)] * 3
    (item_id,) = rt.pipeline.accept([message("1")]).new_ids
    waits = []
    for attempt in (1, 2, 3):
        rt.pipeline.process(item_id)
        item = rt.store.get_item(item_id)
        assert item is not None and item.status == ItemStatus.RETRYING
        assert item.attempts == attempt and "503" in (item.last_error or "")
        waits.append((item.next_attempt_at - clock.now).total_seconds())
        assert rt.pipeline.process(item_id) == "waiting"  # not due yet: queued for its time
        clock.advance(waits[-1])
    # Attempt n waits between half and all of base * 2^(n-1): 10, 20, 40 seconds.
    for n, wait in enumerate(waits):
        assert 10 * 2**n / 2 <= wait <= 10 * 2**n
    assert rt.pipeline.process(item_id) == "done"
    assert len(helpdesk.writes()) == 1


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(base_seconds=5, max_seconds=60)
    rng = random.Random(1)
    assert all(30 <= policy.backoff(n, rng) <= 60 for n in range(5, 40))


def test_retry_after_is_honoured_and_is_not_a_failure(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk, clock: FakeClock,
) -> None:
    rt = runtime_for(max_attempts=1)
    helpdesk.failures = [RateLimited("zendesk", retry_after=120)] * 3
    (item_id,) = rt.pipeline.accept([message("1")]).new_ids
    for _ in range(3):
        assert rt.pipeline.process(item_id) == "deferred"
        item = rt.store.get_item(item_id)
        assert item is not None
        wait = (item.next_attempt_at - clock.now).total_seconds()
        assert 120 <= wait <= 125
        clock.advance(119)
        assert rt.pipeline.process(item_id) == "waiting"  # never before the provider said
        clock.advance(wait - 119)
    # Three rate limits did not use up the single attempt allowed for failures.
    assert rt.pipeline.process(item_id) == "done"
    item = rt.store.get_item(item_id)
    assert item is not None and item.deferrals == 3 and item.attempts == 1


def test_after_max_attempts_item_is_dead_then_replayed(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk, clock: FakeClock,
) -> None:
    rt = runtime_for(max_attempts=3)
    helpdesk.failures = [ConnectionError("reset by peer")] * 3
    (item_id,) = rt.pipeline.accept([message("1")]).new_ids
    outcomes = []
    for _ in range(3):
        clock.advance(3600)
        outcomes.append(rt.pipeline.process(item_id))
    assert outcomes == ["retry", "retry", "dead"]
    (dead,) = rt.store.dead_letters()
    assert dead.item_id == item_id and "reset by peer" in dead.reason and dead.attempts == 3
    assert helpdesk.writes() == []

    assert rt.pipeline.replay([item_id]) == [item_id]
    drain(rt)
    item = rt.store.get_item(item_id)
    assert item is not None and item.status == ItemStatus.DONE
    assert len(helpdesk.writes()) == 1 and rt.store.dead_letters() == []


def test_a_permanent_refusal_is_dead_at_once(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk,
) -> None:
    rt = runtime_for()
    helpdesk.failures = [ProviderError("zendesk", "Forbidden", status=403)]
    (item_id,) = rt.pipeline.accept([message("1")]).new_ids
    assert rt.pipeline.process(item_id) == "dead"
    (delivery,) = rt.store.deliveries_for_item(item_id)
    assert delivery.status == DeliveryStatus.FAILED  # certainly not written


def test_item_type_without_handler_becomes_dead_letter(runtime_for: Callable[..., Runtime]) -> None:
    rt = runtime_for()
    del rt.pipeline.handlers["agent_reply"]  # as in a version that cannot handle it yet
    (item_id,) = rt.pipeline.accept([agent_reply()]).new_ids
    assert rt.pipeline.process(item_id) == "dead"
    (dead,) = rt.store.dead_letters()
    assert "no handler for 'agent_reply'" in dead.reason


@pytest.mark.parametrize("lost", ["by the queue", "before the hand-off"])
def test_sweeper_recovers_a_lost_task(
    backend: tuple[str, str], runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk,
    clock: FakeClock, lost: str,
) -> None:
    rt = runtime_for(*backend, sweep_grace_seconds=60.0)
    if lost == "before the hand-off":
        # The web tier answers once the item is stored; the queue write follows on a
        # background thread. A process killed in between never queues it.
        rt.queue.hand_over = lambda item_ids: None  # type: ignore[method-assign]
    rt.pipeline.accept([message("1")])
    rt.queue.flush_handoff()
    rt.huey.flush()  # the queue loses its task (Redis restarted, say)
    assert drain(rt) == 0 and helpdesk.writes() == []
    assert rt.pipeline.sweep() == []  # within the grace period nothing is presumed lost
    clock.advance(61)
    assert len(rt.pipeline.sweep()) == 1
    drain(rt)
    assert len(helpdesk.writes()) == 1


def test_worker_that_died_holding_an_item_is_recovered_by_sweep(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk, clock: FakeClock,
) -> None:
    rt = runtime_for(lease_seconds=30.0)
    (item_id,) = rt.pipeline.accept([message("1")]).new_ids
    rt.queue.flush_handoff()
    rt.huey.flush()
    assert rt.store.claim_item(item_id, "crashed-worker", clock.now, timedelta(seconds=30))
    clock.advance(31)
    assert rt.pipeline.sweep() == [item_id]
    drain(rt)
    item = rt.store.get_item(item_id)
    assert item is not None and item.status == ItemStatus.DONE


def test_busy_conversation_is_left_alone_and_retried(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk, clock: FakeClock,
) -> None:
    rt = runtime_for()
    (item_id,) = rt.pipeline.accept([message("1", author_id="42")]).new_ids
    rt.queue.flush_handoff()
    rt.huey.flush()
    assert rt.store.acquire_lease("x:1000:42", "other-worker", clock.now, timedelta(seconds=30))
    assert rt.pipeline.process(item_id) == "busy"
    item = rt.store.get_item(item_id)
    assert item is not None and item.status == ItemStatus.ACCEPTED and item.attempts == 0
    assert rt.huey.pending_count() == 1  # it comes back by itself (huey holds its eta)
    rt.store.release_lease("x:1000:42", "other-worker")
    drain(rt)
    assert len(helpdesk.writes()) == 1


def test_one_conversation_is_never_processed_by_two_workers_at_once(
    backend: tuple[str, str], runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk,
) -> None:
    rt = runtime_for(*backend)
    helpdesk.write_seconds = 0.02
    rt.pipeline.clock = lambda: datetime.now(UTC)  # real time: workers run for real
    rt.pipeline.policy = dataclasses.replace(rt.pipeline.policy, busy_retry_seconds=0.1)
    events = [message(str(100 + i), author_id=str(i % 3)) for i in range(18)]
    rt.pipeline.accept(events)
    consumer = rt.consumer(workers=6, embedded=True)
    consumer.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while len(helpdesk.writes()) < 18 and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
    finally:
        consumer.stop(graceful=True)
    assert len(helpdesk.writes()) == 18
    assert dict(helpdesk.max_overlap) == {"0": 1, "1": 1, "2": 1}
    assert all(i.status == ItemStatus.DONE for i in rt.store.list_items())


def test_accept_keeps_items_when_the_queue_is_down(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk, clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = runtime_for(queue_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    with caplog.at_level(logging.WARNING, logger="deskbridge.queue"):
        result = rt.pipeline.accept([message("1")])
        assert rt.queue.flush_handoff()
    item = rt.store.get_item(result.new_ids[0])
    assert item is not None and item.status == ItemStatus.ACCEPTED
    (warning,) = [r for r in caplog.records if r.name == "deskbridge.queue"]
    assert "sweeper" in warning.getMessage() and warning.item_ids == [item.id]
    clock.advance(rt.settings.queue.sweep_grace_seconds + 1)
    assert rt.store.due_for_sweep(clock.now, rt.pipeline.sweep_grace) == [item.id]


def test_reply_that_arrives_before_its_parent_waits_for_it(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk, clock: FakeClock,
) -> None:
    rt = runtime_for(max_attempts=1)
    (reply_id,) = rt.pipeline.accept([message("11", author_id="42", kind=MessageKind.REPLY,
                                              in_reply_to_id="10")]).new_ids
    (parent_id,) = rt.pipeline.accept([message("10", author_id="42")]).new_ids
    assert rt.pipeline.process(reply_id) == "deferred"  # its parent is not on a ticket yet
    assert rt.pipeline.process(parent_id) == "done"
    clock.advance(10)
    assert rt.pipeline.process(reply_id) == "done"  # a wait is no failed attempt
    create, comment = helpdesk.writes()
    assert comment["ticket_id"] == create["ticket_id"] and comment["message_id"] == "11"


def test_priority_rules_for_new_tickets() -> None:
    from integrations.events import SocialUser
    from integrations.linking import LinkRules
    from integrations.pipeline import Route
    from tests.doubles import RecordingHelpdesk

    route = Route("m", RecordingHelpdesk("hd", Path("/nonexistent")), LinkRules(),
                  priority="normal", priority_followers=10_000,
                  vip_handles=frozenset({"ceo"}), vip_priority="urgent")
    assert route.priority_for(SocialUser("x", "1", "someone", follower_count=50)) == "normal"
    assert route.priority_for(SocialUser("x", "2", "famous", follower_count=25_000)) == "urgent"
    assert route.priority_for(SocialUser("x", "3", "CEO", follower_count=3)) == "urgent"


RETRY_CAN_FIX = [
    ProviderError("zendesk", "unavailable", status=503),
    ProviderError("zendesk", "no answer: ReadTimeout", permanent=False),
    StoreUnavailable("store unavailable: database is locked"),
    QueueUnavailable("queue unavailable: ConnectionError"),
    OSError(errno.EMFILE, "Too many open files"),
    ConnectionError("reset by peer"),
    TimeoutError("timed out"),
    requests.ConnectionError("connection refused"),
    requests.Timeout("read timed out"),
]
RETRY_CANNOT_FIX = [
    TypeError("'>=' not supported between instances of 'str' and 'int'"),
    ValueError("invalid literal for int() with base 10: 'lots'"),
    KeyError("ticket"),
    AttributeError("'int' object has no attribute 'split'"),
    UnicodeEncodeError("utf-8", "1\ud800", 1, 2, "surrogates not allowed"),
    PayloadError("author.user_id is not text: a int"),
    Permanent("a message item does not hold a message"),
    ConfigurationError("helpdesks.hd: no adapter for type 'freshdesk' in this version"),
    ProviderError("zendesk", "Forbidden", status=403),
    requests.exceptions.InvalidURL("no host supplied"),
]


@pytest.mark.parametrize("failure", RETRY_CAN_FIX, ids=lambda e: type(e).__name__)
def test_what_a_retry_can_fix_is_retried(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk, clock: FakeClock,
    failure: Exception,
) -> None:
    rt = runtime_for()
    helpdesk.failures = [failure]
    (item_id,) = rt.pipeline.accept([message("1")]).new_ids
    assert rt.pipeline.process(item_id) == "retry"
    clock.advance(3600)
    assert rt.pipeline.process(item_id) == "done" and len(helpdesk.writes()) == 1


@pytest.mark.parametrize("failure", RETRY_CANNOT_FIX, ids=lambda e: type(e).__name__)
def test_what_a_retry_cannot_fix_is_a_dead_letter_at_once_with_the_reason_in_words(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk, failure: Exception,
) -> None:
    rt = runtime_for()
    helpdesk.failures = [failure, failure]  # twice: a text refused goes once more, safe
    (item_id,) = rt.pipeline.accept([message("1")]).new_ids
    assert rt.pipeline.process(item_id) == "dead"
    (dead,) = rt.store.dead_letters()
    assert dead.attempts == 1 and "a retry cannot change that" in dead.reason
    assert str(failure) in dead.reason


def test_garbage_that_got_in_is_dead_at_once_not_retried_for_ten_minutes(
    runtime_for: Callable[..., Runtime], helpdesk: RecordingHelpdesk,
) -> None:
    """An event whose text is a number (a record no parser of today would make) fails the
    same way on every attempt: one attempt, then a dead letter that says so."""
    rt = runtime_for()
    event = from_record(to_record(message("1")) | {"text": 12345})
    (item_id,) = rt.pipeline.accept([event]).new_ids
    assert rt.pipeline.process(item_id) == "dead"
    (dead,) = rt.store.dead_letters()
    assert dead.attempts == 1 and helpdesk.writes() == []
    assert dead.reason.startswith("cannot be processed as received, and a retry cannot "
                                  "change that (AttributeError")


def test_a_record_set_aside_at_the_door_stays_dead_when_replayed(
    runtime_for: Callable[..., Runtime],
) -> None:
    rt = runtime_for()
    assert rt.store.set_aside(("intake", "1-ab-00000001.journal", "record:1"), b"\xff",
                              "not a readable event record: UnicodeDecodeError", rt.pipeline.clock())
    (dead,) = rt.store.dead_letters()
    assert rt.pipeline.replay([dead.item_id]) == [dead.item_id]
    drain(rt)
    (again,) = rt.store.dead_letters()
    assert "set aside when it was received: not a readable event record" in again.reason


# What Zendesk answers a comment body it will not take (hand-written, in the shape of
# https://developer.zendesk.com/api-reference/introduction/requests/ : a 422 RecordInvalid).
REFUSED_BODY = ProviderError("zendesk", "RecordInvalid; Comment: Body is invalid", status=422)
UNWRITABLE = "my order\x07 never arrived \ud800 " + "!" * 20_000


@pytest.fixture
def text_helpdesk(tmp_path: Path) -> TextRecordingHelpdesk:
    return TextRecordingHelpdesk("hd", tmp_path / "text-writes.jsonl")


@pytest.fixture
def text_runtime(runtime_for: Callable[..., Runtime],
                 text_helpdesk: TextRecordingHelpdesk) -> Runtime:
    return runtime_for(desk=text_helpdesk)


def unwritable_message() -> SocialMessage:
    # Past every parser of today (they replace a lone surrogate): as an older record held it.
    return dataclasses.replace(message("1"), text=UNWRITABLE)


def accept_unwritable(rt: Runtime, helpdesk: TextRecordingHelpdesk,
                      *failures: Exception) -> int:
    """Accept the unwritable message, the helpdesk failing its next writes as given."""
    helpdesk.failures = list(failures)
    (item_id,) = rt.pipeline.accept([unwritable_message()]).new_ids
    return item_id


def test_a_message_the_helpdesk_refuses_as_it_is_is_written_in_a_safe_form(
    text_runtime: Runtime, text_helpdesk: TextRecordingHelpdesk,
) -> None:
    """The customer's words reach the agent, cleaned and with a note; the original is kept."""
    rt = text_runtime
    item_id = accept_unwritable(rt, text_helpdesk, REFUSED_BODY)
    assert rt.pipeline.process(item_id) == "done"
    (written,) = text_helpdesk.writes()
    assert written["text"].startswith("my order never arrived \ufffd !!!")
    assert len(written["text"]) <= SAFE_TEXT_CHARS and "\x07" not in written["text"]
    assert f"the message as received is kept in deskbridge's store, item {item_id}" \
        in written["reason"]
    item = rt.store.get_item(item_id)
    assert item is not None and item.outcome is not None
    assert item.outcome.endswith("; written in a safe form")
    assert isinstance(item.event, SocialMessage) and item.event.text == UNWRITABLE
    refused, safe = rt.store.deliveries_for_item(item_id)
    assert (refused.status, safe.status) == (DeliveryStatus.FAILED, DeliveryStatus.DONE)


def test_a_safe_form_write_whose_answer_was_lost_is_not_written_twice(
    text_runtime: Runtime, text_helpdesk: TextRecordingHelpdesk, clock: FakeClock,
) -> None:
    """The safe form was written but the answer lost (a crash, a cut connection): the retry
    finds it, and never goes back to the refused form or writes the safe one again."""
    rt = text_runtime
    lost = [ConnectionError("connection reset after the request was sent")]

    def lose_answer() -> None:
        if lost:
            raise lost.pop()

    text_helpdesk.on_write = lose_answer
    item_id = accept_unwritable(rt, text_helpdesk, REFUSED_BODY)
    assert rt.pipeline.process(item_id) == "retry"
    clock.advance(3600)
    assert rt.pipeline.process(item_id) == "done"
    (written,) = text_helpdesk.writes()
    assert "kept in deskbridge's store" in written["reason"]


def test_a_crash_before_the_safe_form_write_goes_on_with_the_safe_form(
    text_runtime: Runtime, text_helpdesk: TextRecordingHelpdesk, clock: FakeClock,
) -> None:
    rt = text_runtime
    item_id = accept_unwritable(rt, text_helpdesk, REFUSED_BODY, ConnectionError("no answer"))
    assert rt.pipeline.process(item_id) == "retry"
    clock.advance(3600)
    assert rt.pipeline.process(item_id) == "done"
    (written,) = text_helpdesk.writes()
    assert "kept in deskbridge's store" in written["reason"]
    assert text_helpdesk.failures == []  # three calls: refused, cut, written (in safe form)


def test_a_safe_form_the_helpdesk_refuses_too_is_a_dead_letter_that_says_so(
    text_runtime: Runtime, text_helpdesk: TextRecordingHelpdesk,
) -> None:
    rt = text_runtime
    item_id = accept_unwritable(rt, text_helpdesk, REFUSED_BODY, REFUSED_BODY)
    assert rt.pipeline.process(item_id) == "dead"
    (dead,) = rt.store.dead_letters()
    assert dead.reason.startswith("refused, and a retry cannot change that: zendesk: "
                                  "RecordInvalid; Comment: Body is invalid (HTTP 422)")
    assert text_helpdesk.writes() == []


def test_a_deletion_of_a_message_written_in_a_safe_form_points_at_that_write(
    text_runtime: Runtime, text_helpdesk: TextRecordingHelpdesk,
) -> None:
    """Redacting a deleted post finds the comment by the key it was written with."""
    rt = text_runtime
    item_id = accept_unwritable(rt, text_helpdesk, REFUSED_BODY)
    rt.pipeline.process(item_id)
    assert written_key(rt.store, ("x", "1000", "1")) == "x:1000:1:helpdesk:safe"
    assert written_key(rt.store, ("x", "1000", "2")) == "x:1000:2:helpdesk"
