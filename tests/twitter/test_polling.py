"""Polling X (tweepy against the emulator): cursors, pagination, DMs, 429s, crashes."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from integrations.config import parse_settings
from integrations.events import MessageKind
from integrations.runtime import Runtime
from integrations.twitter.client import make_client
from integrations.twitter.emulator import XEmulator
from integrations.twitter.polling import Poller, poll_dms, poll_mentions
from integrations.twitter.settings import XChannelSettings


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = parse_settings(f'[store]\nurl = "sqlite:///{tmp_path}/s.db"\n[queue]\n'
                              f'url = "sqlite:///{tmp_path}/q.db"\n', environ={})
    runtime = Runtime(settings, rng=random.Random(2))
    runtime.upgrade_schema()
    yield runtime
    runtime.close()


def messages(rt: Runtime) -> dict[str, object]:
    return {i.provider_id: i.event for i in rt.store.list_items(limit=1000)}


def test_first_poll_sets_the_start_and_imports_no_history(
    rt: Runtime, x_emulator: XEmulator, x_settings: XChannelSettings,
) -> None:
    x_emulator.add_mention(author_id="42", username="klant", text="@brand old complaint")
    result = poll_mentions(make_client(x_settings), x_settings, rt.pipeline)
    assert result.started and result.accepted == 0 and result.cursor is not None
    assert messages(rt) == {}


def test_new_mentions_across_pages_are_accepted_once(
    rt: Runtime, x_emulator: XEmulator, x_settings: XChannelSettings,
) -> None:
    client = make_client(x_settings)
    poll_mentions(client, x_settings, rt.pipeline)  # the starting point
    long_text = "@brand " + "mijn internet valt steeds weg, al drie dagen. " * 10
    added = [x_emulator.add_mention(author_id=str(100 + i), username=f"klant{i}",
                                    text=f"@brand vraag {i}") for i in range(130)]
    added.append(x_emulator.add_mention(author_id="7", username="lang", text=long_text))
    result = poll_mentions(client, x_settings, rt.pipeline)
    assert (result.fetched, result.accepted, result.cursor) == (131, 131, added[-1]["id"])
    stored = messages(rt)
    assert set(stored) == {a["id"] for a in added}
    long = stored[added[-1]["id"]]
    assert long.text == long_text.strip() or long.text == long_text  # type: ignore[attr-defined]
    assert long.author.handle == "lang"  # type: ignore[attr-defined]
    again = poll_mentions(client, x_settings, rt.pipeline)
    assert (again.fetched, again.accepted) == (0, 0)


def test_dms_are_polled_behind_their_own_cursor(
    rt: Runtime, x_emulator: XEmulator, x_settings: XChannelSettings,
) -> None:
    client = make_client(x_settings)
    x_emulator.add_dm(sender_id="42", username="klant", text="oud bericht")
    assert poll_dms(client, x_settings, rt.pipeline).accepted == 0  # the starting point
    dm = x_emulator.add_dm(sender_id="42", username="klant", text="Mijn zaaknummer is 48213")
    result = poll_dms(client, x_settings, rt.pipeline)
    assert (result.accepted, result.cursor) == (1, dm["id"])
    (event,) = messages(rt).values()
    assert event.kind == MessageKind.DM and event.text == "Mijn zaaknummer is 48213"  # type: ignore[attr-defined]
    assert event.author.handle == "klant"  # type: ignore[attr-defined]


def test_a_crash_before_the_cursor_moves_loses_and_duplicates_nothing(
    rt: Runtime, x_emulator: XEmulator, x_settings: XChannelSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(x_settings)
    poll_mentions(client, x_settings, rt.pipeline)
    before = rt.store.get_cursor("x", x_settings.account_id, "mentions")
    added = [x_emulator.add_mention(author_id="42", username="k", text=f"@brand {i}")
             for i in range(3)]

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("process killed")

    with monkeypatch.context() as patch:
        patch.setattr(rt.store, "set_cursor", crash)
        with pytest.raises(RuntimeError):
            poll_mentions(client, x_settings, rt.pipeline)
    assert rt.store.get_cursor("x", x_settings.account_id, "mentions") == before
    assert len(messages(rt)) == 3  # accepted before the crash
    result = poll_mentions(client, x_settings, rt.pipeline)  # after the restart
    assert (result.fetched, result.accepted, result.cursor) == (3, 0, added[-1]["id"])
    assert len(messages(rt)) == 3


def test_rate_limit_schedules_the_next_poll_at_the_reset(
    rt: Runtime, x_emulator: XEmulator, x_settings: XChannelSettings,
) -> None:
    poller = Poller(make_client(x_settings), x_settings, rt.pipeline, threading.Event())
    assert poller.run_once() == x_settings.poll_interval_seconds
    x_emulator.fail_next("GET /2/users/:id/mentions", status=429, reset_after=600)
    wait = poller.run_once()
    assert 590 <= wait <= 601
