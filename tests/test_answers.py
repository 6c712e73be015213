"""Agent answers out to the channel, and deletions in, through the pipeline (test doubles)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integrations.config import Settings
from integrations.events import AgentReply, Deletion, MessageKind
from integrations.runtime import Runtime
from integrations.store import ItemStatus
from tests.conftest import FakeClock
from tests.doubles import RecordingChannel, RecordingHelpdesk
from tests.factories import message


@pytest.fixture
def channel() -> RecordingChannel:
    return RecordingChannel()


@pytest.fixture
def helpdesk(tmp_path: Path) -> RecordingHelpdesk:
    return RecordingHelpdesk("hd", tmp_path / "writes.jsonl")


@pytest.fixture
def rt(tmp_path: Path, make_settings: Callable[..., Settings], helpdesk: RecordingHelpdesk,
       channel: RecordingChannel, clock: FakeClock) -> Iterator[Runtime]:
    settings = make_settings(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    runtime = Runtime(settings, helpdesks={"hd": helpdesk}, channels={"acme_x": channel},
                      clock=clock, rng=random.Random(3))
    runtime.upgrade_schema()
    yield runtime
    runtime.close()


def process_all(rt: Runtime, *events: object) -> list[str]:
    ids = rt.pipeline.accept(list(events)).new_ids  # type: ignore[arg-type]
    return [rt.pipeline.process(i) for i in ids]


def answer(text: str, ticket: str = "1001", comment: str = "c1", public: bool = True) -> AgentReply:
    return AgentReply("hd", ticket, comment, text, public, datetime(2026, 11, 22, 10, tzinfo=UTC))


def test_public_answer_replies_to_the_customers_latest_post(
    rt: Runtime, channel: RecordingChannel,
) -> None:
    process_all(rt, message("10"))
    process_all(rt, message("11", kind=MessageKind.REPLY, in_reply_to_id="10"))
    assert process_all(rt, answer("Je pakket is onderweg.")) == ["done"]
    assert channel.sent == [{"op": "reply", "to": "11", "text": "Je pakket is onderweg.",
                             "id": channel.sent[0]["id"]}]


def test_answer_on_a_dm_conversation_goes_out_as_a_dm(
    rt: Runtime, channel: RecordingChannel,
) -> None:
    process_all(rt, message("20", kind=MessageKind.DM, author_id="77"))
    process_all(rt, answer("Stuur je je postcode?"))
    assert [(s["op"], s["to"]) for s in channel.sent] == [("dm", "77")]


def test_internal_notes_and_empty_answers_never_go_out(
    rt: Runtime, channel: RecordingChannel,
) -> None:
    process_all(rt, message("10"))
    process_all(rt, answer("internal: check the warehouse", public=False))
    process_all(rt, answer(" \n ", comment="c2"))
    assert channel.sent == []


def test_long_answer_is_a_numbered_thread_each_part_answering_the_last(
    rt: Runtime, channel: RecordingChannel,
) -> None:
    process_all(rt, message("10"))
    process_all(rt, answer("Dank voor je geduld, we zoeken het uit. " * 20))
    parts = [s for s in channel.sent if s["op"] == "reply"]
    assert len(parts) >= 3 and parts[0]["to"] == "10"
    assert all(p["to"] == prev["id"] for prev, p in itertools.pairwise(parts))
    assert parts[-1]["text"].endswith(f"({len(parts)}/{len(parts)})")


def test_a_lost_answer_is_not_posted_twice(rt: Runtime, channel: RecordingChannel,
                                           clock: FakeClock) -> None:
    process_all(rt, message("10"))
    channel.lose_next_answer = True
    (item_id,) = rt.pipeline.accept([answer("Opgelost!")]).new_ids
    assert rt.pipeline.process(item_id) == "retry"  # posted, but we never heard back
    clock.advance(3600)
    assert rt.pipeline.process(item_id) == "done"  # found it among our posts: no second post
    assert [s["text"] for s in channel.sent] == ["Opgelost!"]


def test_echo_of_our_own_answer_is_recognised(rt: Runtime, channel: RecordingChannel) -> None:
    process_all(rt, message("10"))
    process_all(rt, answer("Opgelost!"))
    echo = message(channel.sent[0]["id"], author_id="1000", is_own=True,
                   kind=MessageKind.REPLY, in_reply_to_id="10")
    process_all(rt, echo)
    item = rt.store.find_item("x", "1000", channel.sent[0]["id"])
    assert item is not None and item.outcome == "ignore: our own answer from ticket 1001, echoed by X"


def test_answer_to_a_ticket_without_a_conversation_is_a_dead_letter(rt: Runtime) -> None:
    assert process_all(rt, answer("Hallo", ticket="999")) == ["dead"]
    (dead,) = rt.store.dead_letters()
    assert "no verified social conversation" in dead.reason


def test_deletion_blanks_our_copy_and_notes_the_ticket(
    rt: Runtime, helpdesk: RecordingHelpdesk,
) -> None:
    process_all(rt, message("10", text="mijn adres is Dorpsstraat 1"))
    deletion = Deletion("x", "1000", "10", "42", datetime(2026, 11, 22, 11, tzinfo=UTC))
    assert process_all(rt, deletion) == ["done"]
    item = rt.store.find_item("x", "1000", "10")
    assert item is not None and item.deleted_at is not None
    assert item.event.text == "" and "Dorpsstraat" not in str(item.payload)  # type: ignore[union-attr]
    create, note = helpdesk.writes()
    assert note["op"] == "deletion_note" and note["ticket_id"] == create["ticket_id"]


def test_message_deleted_before_processing_writes_nothing(
    rt: Runtime, helpdesk: RecordingHelpdesk,
) -> None:
    (msg_id,) = rt.pipeline.accept([message("10")]).new_ids
    deletion = Deletion("x", "1000", "10", "42", datetime(2026, 11, 22, 11, tzinfo=UTC))
    (del_id,) = rt.pipeline.accept([deletion]).new_ids
    assert rt.pipeline.process(del_id) == "done"
    assert rt.pipeline.process(msg_id) == "done"
    item = rt.store.get_item(msg_id)
    assert item is not None and item.status == ItemStatus.DONE
    assert item.outcome == "ignore: deleted by its author before it was processed"
    assert helpdesk.writes() == []
