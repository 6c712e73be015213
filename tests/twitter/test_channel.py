"""The X channel adapter, running tweepy against the X emulator over loopback."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from integrations.config import parse_settings
from integrations.errors import ProviderError, RateLimited
from integrations.events import AgentReply
from integrations.rebasing import RebasingAdapter
from integrations.runtime import Runtime
from integrations.twitter.channel import XChannel, same_text
from integrations.twitter.emulator import XEmulator
from integrations.twitter.settings import XChannelSettings
from tests.doubles import RecordingHelpdesk
from tests.factories import message


@pytest.fixture
def channel(x_settings: XChannelSettings) -> XChannel:
    return XChannel("brand", x_settings)


def posts(emulator: XEmulator) -> list[dict[str, Any]]:
    return [p for p in emulator.posted() if p["kind"] == "tweet"]


def test_reply_is_posted_in_reply_and_found_again(x_emulator: XEmulator, channel: XChannel) -> None:
    mention = x_emulator.add_mention(author_id="42", username="klant", text="@brand help")
    post_id = channel.send_reply(mention["id"], "We kijken ernaar: https://status.acme.example/1")
    (posted,) = posts(x_emulator)
    assert posted["id"] == post_id and posted["in_reply_to_tweet_id"] == mention["id"]
    # X rewrote the URL to t.co; the post is still recognised as ours.
    assert channel.find_reply(mention["id"], "We kijken ernaar: https://status.acme.example/1") \
        == post_id
    assert channel.find_reply(mention["id"], "another text") is None


def test_dm_is_sent_and_found_again(x_emulator: XEmulator, channel: XChannel) -> None:
    dm_id = channel.send_dm("42", "Mag ik je ordernummer?")
    (sent,) = [p for p in x_emulator.posted() if p["kind"] == "dm"]
    assert sent["participant_id"] == "42" and sent["dm_event_id"] == dm_id
    assert channel.find_dm("42", "Mag ik je ordernummer?") == dm_id


def test_rate_limit_becomes_retry_after_at_xs_reset(
    x_emulator: XEmulator, channel: XChannel,
) -> None:
    x_emulator.fail_next("POST /2/tweets", status=429, reset_after=120)
    with pytest.raises(RateLimited) as caught:
        channel.send_reply("1", "hallo")
    assert caught.value.retry_after is not None and 100 <= caught.value.retry_after <= 121
    assert posts(x_emulator) == []


def test_server_error_is_transient_and_refusal_permanent(
    x_emulator: XEmulator, channel: XChannel,
) -> None:
    x_emulator.fail_next("POST /2/tweets", status=503)
    with pytest.raises(ProviderError) as outage:
        channel.send_reply("1", "hallo")
    assert outage.value.status == 503 and not outage.value.is_permanent
    channel.send_reply("1", "same text twice")
    with pytest.raises(ProviderError) as refused:
        channel.send_reply("1", "same text twice")
    assert refused.value.status == 403 and refused.value.is_permanent
    assert "duplicate content" in str(refused.value)


def test_same_text_ignores_only_urls() -> None:
    assert same_text("zie https://a.example/x nu", "zie https://t.co/abc nu")
    assert not same_text("zie nu", "zie later")


class LoseFirstPostAnswer(RebasingAdapter):
    """Delivers the first POST /2/tweets, then drops X's answer: an unknown outcome."""

    lost = False

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)
        if request.method == "POST" and not LoseFirstPostAnswer.lost:
            LoseFirstPostAnswer.lost = True
            raise requests.ConnectionError("connection reset after the request was sent")
        return response


def test_answer_whose_reply_was_lost_is_posted_exactly_once(
    tmp_path: Path, x_emulator: XEmulator, x_settings: XChannelSettings, x_url: str,
) -> None:
    config = (f'[store]\nurl = "sqlite:///{tmp_path}/s.db"\n[queue]\nurl = '
              f'"sqlite:///{tmp_path}/q.db"\n[channels.brand]\ntype = "x"\naccount_id = '
              f'"{x_settings.account_id}"\nhandle = "brand"\nconsumer_key = "k"\n'
              f'consumer_secret = "s"\n[helpdesks.hd]\ntype = "zendesk"\nsubdomain = "acme"\n'
              f'email = "a@acme.example"\ntoken = "t"\n[[mappings]]\nname = "m"\n'
              f'channel = "brand"\nhelpdesk = "hd"\n')
    channel = XChannel("brand", x_settings)
    channel.client.session.mount("https://api.twitter.com/",
                                 LoseFirstPostAnswer("https://api.twitter.com", x_url))
    helpdesk = RecordingHelpdesk("hd", tmp_path / "w")
    rt = Runtime(parse_settings(config, environ={}), channels={"brand": channel},
                 helpdesks={"hd": helpdesk},
                 rng=random.Random(1), clock=lambda: clock_now[0])
    clock_now = [datetime(2026, 11, 22, 9, tzinfo=UTC)]
    rt.upgrade_schema()
    mention = x_emulator.add_mention(author_id="42", username="klant", text="@brand help")
    (m_id,) = rt.pipeline.accept([message(mention["id"], account=x_settings.account_id)]).new_ids
    rt.pipeline.process(m_id)
    helpdesk.add_agent_comment("1001", "c1", "Opgelost, sorry!")  # what the reply is read back as
    reply = AgentReply("hd", "1001", "c1", "Opgelost, sorry!", True, clock_now[0])
    (r_id,) = rt.pipeline.accept([reply]).new_ids
    assert rt.pipeline.process(r_id) == "retry"  # posted on X, but the answer never came back
    clock_now[0] = datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert rt.pipeline.process(r_id) == "done"
    assert [p["text"] for p in posts(x_emulator)] == ["Opgelost, sorry!"]
    rt.close()
