"""Agent answers out to the channel, and deletions in, through the pipeline (test doubles)."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integrations.config import Settings
from integrations.events import AgentReply, Deletion, MessageKind
from integrations.helpdesk import NewTicket, WriteResult
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


_comment_ids = itertools.count(5001)


def answer(helpdesk: RecordingHelpdesk, text: str, ticket: str = "1001", *,
           public: bool = True, webhook_text: str | None = None) -> AgentReply:
    """An agent's comment as the helpdesk has it, and the webhook that reports it (whose text,
    by default the same, is only a notification)."""
    comment = str(next(_comment_ids))
    helpdesk.add_agent_comment(ticket, comment, text, public=public)
    return AgentReply("hd", ticket, comment, text if webhook_text is None else webhook_text,
                      public, datetime(2026, 11, 22, 10, tzinfo=UTC))


def test_public_answer_replies_to_the_customers_latest_post(
    rt: Runtime, helpdesk: RecordingHelpdesk, channel: RecordingChannel,
) -> None:
    process_all(rt, message("10"))
    process_all(rt, message("11", kind=MessageKind.REPLY, in_reply_to_id="10"))
    assert process_all(rt, answer(helpdesk, "Je pakket is onderweg.")) == ["done"]
    assert channel.sent == [{"op": "reply", "to": "11", "text": "Je pakket is onderweg.",
                             "id": channel.sent[0]["id"]}]


def test_answer_on_a_dm_conversation_goes_out_as_a_dm(
    rt: Runtime, helpdesk: RecordingHelpdesk, channel: RecordingChannel,
) -> None:
    process_all(rt, message("20", kind=MessageKind.DM, author_id="77"))
    process_all(rt, answer(helpdesk, "Stuur je je postcode?"))
    assert [(s["op"], s["to"]) for s in channel.sent] == [("dm", "77")]


def test_internal_notes_and_empty_answers_never_go_out(
    rt: Runtime, helpdesk: RecordingHelpdesk, channel: RecordingChannel,
) -> None:
    process_all(rt, message("10"))
    process_all(rt, answer(helpdesk, "internal: check the warehouse", public=False))
    process_all(rt, answer(helpdesk, " \n "))
    assert channel.sent == []


def test_long_answer_is_a_numbered_thread_each_part_answering_the_last(
    rt: Runtime, helpdesk: RecordingHelpdesk, channel: RecordingChannel,
) -> None:
    process_all(rt, message("10"))
    process_all(rt, answer(helpdesk, "Dank voor je geduld, we zoeken het uit. " * 20))
    parts = [s for s in channel.sent if s["op"] == "reply"]
    assert len(parts) >= 3 and parts[0]["to"] == "10"
    assert all(p["to"] == prev["id"] for prev, p in itertools.pairwise(parts))
    assert parts[-1]["text"].endswith(f"({len(parts)}/{len(parts)})")


def test_a_lost_answer_is_not_posted_twice(rt: Runtime, helpdesk: RecordingHelpdesk,
                                           channel: RecordingChannel, clock: FakeClock) -> None:
    process_all(rt, message("10"))
    channel.lose_next_answer = True
    (item_id,) = rt.pipeline.accept([answer(helpdesk, "Opgelost!")]).new_ids
    assert rt.pipeline.process(item_id) == "retry"  # posted, but we never heard back
    clock.advance(3600)
    assert rt.pipeline.process(item_id) == "done"  # found it among our posts: no second post
    assert [s["text"] for s in channel.sent] == ["Opgelost!"]


def test_echo_of_our_own_answer_is_recognised(rt: Runtime, helpdesk: RecordingHelpdesk,
                                             channel: RecordingChannel) -> None:
    process_all(rt, message("10"))
    process_all(rt, answer(helpdesk, "Opgelost!"))
    echo = message(channel.sent[0]["id"], author_id="1000", is_own=True,
                   kind=MessageKind.REPLY, in_reply_to_id="10")
    process_all(rt, echo)
    item = rt.store.find_item("x", "1000", channel.sent[0]["id"])
    assert item is not None and item.outcome == "ignore: our own answer from ticket 1001, echoed by X"


def test_answer_to_a_ticket_without_a_conversation_is_a_dead_letter(
    rt: Runtime, helpdesk: RecordingHelpdesk,
) -> None:
    assert process_all(rt, answer(helpdesk, "Hallo", ticket="999")) == ["dead"]
    (dead,) = rt.store.dead_letters()
    assert "no verified social conversation" in dead.reason


# ---------------------------------------------------------------- the webhook is only a notification


def test_what_goes_out_is_the_helpdesks_text_not_the_webhooks(
    rt: Runtime, helpdesk: RecordingHelpdesk, channel: RecordingChannel,
) -> None:
    process_all(rt, message("10"))
    reply = answer(helpdesk, "Uw pakket komt vrijdag.", webhook_text="Stuur je wachtwoord naar ...")
    assert process_all(rt, reply) == ["done"]
    assert [s["text"] for s in channel.sent] == ["Uw pakket komt vrijdag."]
    assert helpdesk.comment_reads == 1  # one read per answer


def test_a_webhook_naming_another_tickets_comment_sends_nothing(
    rt: Runtime, helpdesk: RecordingHelpdesk, channel: RecordingChannel,
) -> None:
    # The injection: an agent's comment on ticket 1001 ends in `", "ticket_id": "1002`, and
    # a body parsed last-wins names ticket 1002, another customer's, with a conversation.
    process_all(rt, message("10", author_id="41"))  # ticket 1001
    process_all(rt, message("20", author_id="42"))  # ticket 1002, someone else
    on_1001 = answer(helpdesk, 'Uw code is 4711", "ticket_id": "1002', ticket="1001")
    forged = AgentReply("hd", "1002", on_1001.comment_id, on_1001.text, True, on_1001.created_at)
    assert process_all(rt, forged) == ["done"]
    assert channel.sent == []
    item = rt.store.find_item("helpdesk", "hd", f"comment:{on_1001.comment_id}")
    assert item is not None
    assert item.outcome == f"ignore: comment {on_1001.comment_id} is not on ticket 1002"


@pytest.mark.parametrize(("seed", "why"), [
    ({"public": False}, "is an internal note, never sent"),
    ({"role": "end-user"}, "was written by end-user, not by an agent"),
    ({"role": ""}, "was written by an author the helpdesk does not name, not by an agent"),
])
def test_a_comment_the_helpdesk_says_is_private_or_a_customers_sends_nothing(
    rt: Runtime, helpdesk: RecordingHelpdesk, channel: RecordingChannel,
    seed: dict[str, object], why: str,
) -> None:
    process_all(rt, message("10"))
    reply = answer(helpdesk, "Dank u!")  # the webhook says: public, by an agent
    helpdesk.add_agent_comment("1001", reply.comment_id, "Dank u!", **seed)  # type: ignore[arg-type]
    assert process_all(rt, reply) == ["done"]
    assert channel.sent == []
    item = rt.store.find_item("helpdesk", "hd", f"comment:{reply.comment_id}")
    assert item is not None and item.outcome == f"ignore: comment {reply.comment_id} on " \
                                                f"ticket 1001 {why}"


def test_a_comment_the_helpdesk_does_not_have_sends_nothing(
    rt: Runtime, channel: RecordingChannel,
) -> None:
    process_all(rt, message("10"))
    made_up = AgentReply("hd", "1001", "777", "Hallo", True, datetime(2026, 11, 22, tzinfo=UTC))
    assert process_all(rt, made_up) == ["done"]
    assert channel.sent == []


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


def test_a_post_whose_author_x_did_not_send_is_filed_but_never_answered(
    rt: Runtime, helpdesk: RecordingHelpdesk, channel: RecordingChannel,
) -> None:
    known = message("40", text="@acme mijn pakket is kwijt")
    nobody = dataclasses.replace(known, author=dataclasses.replace(
        known.author, user_id="", handle="", display_name="", profile_url=None))
    create = helpdesk.create_ticket

    def with_placeholder(request: NewTicket, key: str) -> WriteResult:
        # as Zendesk answers: the ticket's requester is its placeholder user
        return dataclasses.replace(create(request, key), requester_id="u-placeholder")

    helpdesk.create_ticket = with_placeholder  # type: ignore[method-assign]
    assert process_all(rt, nobody) == ["done"]
    (created,) = helpdesk.writes()
    assert (created["op"], created["verified"], created["public"]) == (
        "create_ticket", False, False)
    assert rt.store.identities_for("x", "") == []  # nobody remembered as a requester
    assert process_all(rt, answer(helpdesk, "Wie bent u?", created["ticket_id"])) == ["dead"]
    assert channel.sent == []
