"""Linking through the pipeline, with the recording helpdesk test double."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integrations.config import Settings
from integrations.events import MessageKind
from integrations.helpdesk import Ticket
from integrations.runtime import Runtime
from tests.conftest import FakeClock
from tests.doubles import RecordingHelpdesk
from tests.factories import message

STRANGER = "7"


@pytest.fixture
def helpdesk(tmp_path: Path) -> RecordingHelpdesk:
    hd = RecordingHelpdesk("hd", tmp_path / "writes.jsonl")
    hd.tickets["48213"] = Ticket("48213", "open", "u-42", requester_social_ids=("42",))
    hd.tickets["500"] = Ticket("500", "open", "u-9", requester_social_ids=("9",),
                               updated_at=datetime(2026, 11, 21, tzinfo=UTC))
    hd.tickets["777"] = Ticket("777", "closed", "u-42", is_closed=True,
                              requester_social_ids=("42",))
    return hd


@pytest.fixture
def rt(tmp_path: Path, make_settings: Callable[..., Settings], helpdesk: RecordingHelpdesk,
       clock: FakeClock) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db"),
                      helpdesks={"hd": helpdesk}, clock=clock, rng=random.Random(5))
    runtime.upgrade_schema()
    yield runtime
    runtime.close()


def process(rt: Runtime, *events: object) -> None:
    for item_id in rt.pipeline.accept(list(events)).new_ids:  # type: ignore[arg-type]
        assert rt.pipeline.process(item_id) == "done"


def test_requester_citing_their_ticket_gets_a_public_comment(
    rt: Runtime, helpdesk: RecordingHelpdesk,
) -> None:
    process(rt, message("1", text="Ticket #48213 is nog steeds niet opgelost"))
    (write,) = helpdesk.writes()
    assert (write["op"], write["ticket_id"], write["public"], write["verified"]) == (
        "comment", "48213", True, True)


def test_stranger_gets_an_unverified_note_then_links_by_identity_once_confirmed(
    rt: Runtime, helpdesk: RecordingHelpdesk, clock: FakeClock,
) -> None:
    process(rt, message("1", author_id=STRANGER, text="zaak 500, wanneer hoor ik iets?"))
    (note,) = helpdesk.writes()
    assert (note["ticket_id"], note["public"], note["verified"]) == ("500", False, False)
    (claim,) = rt.store.identities_for("x", STRANGER)
    assert (claim.status, claim.ticket_id, claim.helpdesk_user_id) == ("pending", "500", "u-9")
    link = rt.store.link_for_message("x", "1000", "1")
    assert link is not None and link.reason.startswith("UNVERIFIED")

    rt.store.confirm_identity("hd", "500", clock.now)  # the agent's tag, in the Zendesk issue
    process(rt, message("2", author_id=STRANGER, text="en?"))
    latest = helpdesk.writes()[-1]
    assert (latest["op"], latest["ticket_id"], latest["public"]) == ("comment", "500", True)
    link = rt.store.link_for_message("x", "1000", "2")
    assert link is not None and link.rule == "identity"


def test_a_burst_from_one_customer_opens_one_ticket(
    rt: Runtime, helpdesk: RecordingHelpdesk,
) -> None:
    process(rt, *(message(str(i), author_id="55", text=f"storing deel {i}") for i in range(5)))
    ops = [w["op"] for w in helpdesk.writes()]
    assert ops == ["create_ticket"] + ["comment"] * 4
    assert len({w["ticket_id"] for w in helpdesk.writes()}) == 1


def test_closed_ticket_gets_a_follow_up(rt: Runtime, helpdesk: RecordingHelpdesk) -> None:
    process(rt, message("1", text="ticket 777 is weer kapot"))
    (write,) = helpdesk.writes()
    assert (write["op"], write["follow_up_of"]) == ("create_ticket", "777")


def test_dm_conversation_stays_on_one_ticket_and_private(
    rt: Runtime, helpdesk: RecordingHelpdesk,
) -> None:
    process(rt, message("1", author_id="66", kind=MessageKind.DM, text="hoi"))
    process(rt, message("2", author_id="66", kind=MessageKind.DM, text="nog iets",
                        in_reply_to_id=None))
    create, comment = helpdesk.writes()
    assert comment["ticket_id"] == create["ticket_id"] and comment["public"] is False
