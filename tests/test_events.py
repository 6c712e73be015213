"""Normalised events: stored and read back whole; aware times only; a closed vocabulary."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime

import pytest

from integrations.errors import PayloadError
from integrations.events import Deletion, MessageKind, from_record, to_record
from tests.factories import agent_reply, message


@pytest.mark.parametrize("event", [
    message("1", text="Zaak 00012345 — nog steeds geen antwoord 🙁"),
    agent_reply(),
    Deletion("x", "1000", "1", "42", datetime(2026, 11, 22, tzinfo=UTC), raw={"a": 1}),
])
def test_every_event_type_round_trips(event: object) -> None:
    assert from_record(to_record(event)) == event  # type: ignore[arg-type]


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Deletion("x", "1000", "1", "42", datetime(2026, 11, 22))


def test_events_are_immutable() -> None:
    with pytest.raises(FrozenInstanceError):
        message().text = "changed"  # type: ignore[misc]


def test_kinds_are_a_closed_vocabulary() -> None:
    assert {k.value for k in MessageKind} == {
        "mention", "reply", "quote", "retweet", "dm", "delete", "unknown"}


def test_a_record_of_unknown_shape_is_a_payload_error() -> None:
    with pytest.raises(PayloadError):
        from_record({"type": "telegram"})
    with pytest.raises(PayloadError):
        from_record({**to_record(message()), "kind": "favourite"})


def test_natural_and_conversation_keys() -> None:
    m = message("5", author_id="42")
    assert m.natural_key == ("x", "1000", "5") and m.conversation_key == "x:1000:42"
    assert agent_reply("9", "1001").conversation_key == "helpdesk:hd:1001"
