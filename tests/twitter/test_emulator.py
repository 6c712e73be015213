"""The X emulator, driven by the real tweepy Client over loopback HTTP.

Every X call here goes through `integrations.twitter.client.make_client`, so tweepy builds,
signs (OAuth 1.0a or bearer) and parses each request itself; the emulator runs on a real port.
Signatures are checked against values computed here with hmac, per X's documented algorithm.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import tweepy
from flask import Flask, Response, request
from pydantic import SecretStr

from integrations.twitter.client import make_client
from integrations.twitter.emulator import (
    Credentials,
    XEmulator,
    crc_response_token,
    create_app,
    sign_webhook_body,
)
from tests.conftest import EpochClock
from tests.twitter.conftest import served

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z



@pytest.fixture
def clock() -> EpochClock:
    return EpochClock(START)


@pytest.fixture
def emulator(clock: EpochClock) -> XEmulator:
    return XEmulator(clock=clock, rate_limits={"GET /2/dm_events": 2})


@pytest.fixture
def base_url(emulator: XEmulator) -> Iterator[str]:
    with served(create_app(emulator)) as url:
        yield url


@pytest.fixture
def client(emulator: XEmulator, base_url: str) -> tweepy.Client:
    return make_client(emulator.channel_settings(base_url))


@dataclass
class WebhookReceiver:
    """A webhook consumer app: answers CRC with `secret` and records every POST."""

    secret: str
    url: str = ""
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver(secret=Credentials().consumer_secret)
    app = Flask("webhook_receiver")

    @app.route("/webhooks/x", methods=["GET", "POST"])
    def webhook() -> Response | dict[str, str]:
        if request.method == "GET":
            digest = hmac.new(hook.secret.encode(), request.args["crc_token"].encode(),
                              hashlib.sha256).digest()
            return {"response_token": "sha256=" + base64.b64encode(digest).decode()}
        hook.received.append((request.get_data(), dict(request.headers)))
        return Response(status=200)

    with served(app) as url:
        hook.url = url + "/webhooks/x"
        yield hook


def x_hmac(secret: str, message: bytes) -> str:
    """X's webhook algorithm, written out here: sha256= + base64(HMAC-SHA256(secret, msg))."""
    return "sha256=" + base64.b64encode(
        hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def add_mentions(emulator: XEmulator, clock: EpochClock, count: int) -> list[str]:
    ids = []
    for n in range(count):
        clock.now += 1
        post = emulator.add_mention(author_id=str(100 + n), username=f"customer{n}",
                                    text=f"@deskbridge_demo problem number {n}")
        ids.append(post["id"])
    return ids


# -- mentions --------------------------------------------------------------------------------

def test_mentions_page_newest_first_and_follow_next_token(
        emulator: XEmulator, clock: EpochClock, client: tweepy.Client) -> None:
    ids = add_mentions(emulator, clock, 7)

    first = client.get_users_mentions(emulator.account.id, max_results=5)
    second = client.get_users_mentions(emulator.account.id, max_results=5,
                                       pagination_token=first.meta["next_token"])

    assert [t.id for t in first.data] == [int(i) for i in reversed(ids[2:])]
    assert first.meta["newest_id"] == ids[6] and first.meta["oldest_id"] == ids[2]
    assert [t.id for t in second.data] == [int(ids[1]), int(ids[0])]
    assert "next_token" not in second.meta and second.meta["result_count"] == 2


def test_since_id_returns_only_newer_mentions(
        emulator: XEmulator, clock: EpochClock, client: tweepy.Client) -> None:
    ids = add_mentions(emulator, clock, 4)

    newer = client.get_users_mentions(emulator.account.id, since_id=ids[1])

    assert [t.id for t in newer.data] == [int(ids[3]), int(ids[2])]


def test_ids_are_19_digit_snowflakes_increasing_with_time(
        emulator: XEmulator, clock: EpochClock) -> None:
    ids = add_mentions(emulator, clock, 3)
    assert all(len(i) == 19 and i.isdigit() for i in ids)
    assert int(ids[0]) < int(ids[1]) < int(ids[2])


def test_no_mentions_is_only_a_zero_count(emulator: XEmulator, client: tweepy.Client) -> None:
    empty = client.get_users_mentions(emulator.account.id)
    assert empty.data is None and empty.meta == {"result_count": 0}


def test_default_fields_are_id_text_and_edit_history(
        emulator: XEmulator, clock: EpochClock, client: tweepy.Client) -> None:
    add_mentions(emulator, clock, 1)
    mention = client.get_users_mentions(emulator.account.id).data[0]
    assert set(mention.data) == {"id", "text", "edit_history_tweet_ids"}


def test_reply_mention_expands_author_and_replied_to_post(
        emulator: XEmulator, client: tweepy.Client) -> None:
    ours = client.create_tweet(text="We are looking into it.").data
    emulator.add_mention(author_id="4242", username="carol", name="Carol",
                         text="@deskbridge_demo still broken: https://help.example.com/t/123",
                         in_reply_to_tweet_id=ours["id"])

    page = client.get_users_mentions(
        emulator.account.id, expansions=["author_id", "referenced_tweets.id"],
        tweet_fields=["author_id", "conversation_id", "in_reply_to_user_id", "entities",
                      "referenced_tweets", "created_at"], user_auth=True)

    mention = page.data[0]
    assert mention.author_id == 4242
    assert mention.in_reply_to_user_id == int(emulator.account.id)
    assert mention.conversation_id == int(ours["id"])
    assert mention.referenced_tweets[0].data == {"type": "replied_to", "id": ours["id"]}
    url = mention.entities["urls"][0]
    assert url["expanded_url"] == "https://help.example.com/t/123"
    assert mention.text[url["start"]:url["end"]] == url["url"]
    assert url["url"].startswith("https://t.co/") and len(url["url"]) == 23
    assert mention.entities["mentions"][0]["id"] == emulator.account.id
    assert [(u.id, u.username) for u in page.includes["users"]] == [(4242, "carol")]
    assert [t.id for t in page.includes["tweets"]] == [int(ours["id"])]


def test_long_mention_has_note_tweet_with_the_whole_text(
        emulator: XEmulator, client: tweepy.Client) -> None:
    long_text = "@deskbridge_demo " + "my order never arrived and nobody answers. " * 10
    emulator.add_mention(author_id="77", username="dave", text=long_text)

    mention = client.get_users_mentions(emulator.account.id,
                                        tweet_fields=["note_tweet"]).data[0]

    assert mention.note_tweet["text"] == long_text
    assert long_text.startswith(mention.text) and len(mention.text) < len(long_text)


def test_max_results_outside_x_limits_is_a_bad_request(
        emulator: XEmulator, client: tweepy.Client) -> None:
    with pytest.raises(tweepy.BadRequest, match=r"value \[1\] is not between 5 and 100"):
        client.get_users_mentions(emulator.account.id, max_results=1)


# -- own posts and DMs -----------------------------------------------------------------------

def test_own_posts_timeline_shows_the_reply(emulator: XEmulator,
                                            client: tweepy.Client) -> None:
    mention = emulator.add_mention(author_id="55", username="erin", text="@deskbridge_demo hi")
    reply = client.create_tweet(text="@erin hello", in_reply_to_tweet_id=mention["id"]).data

    mine = client.get_users_tweets(emulator.account.id, since_id=mention["id"],
                                   tweet_fields=["referenced_tweets"])

    assert [t.id for t in mine.data] == [int(reply["id"])]
    assert mine.data[0].referenced_tweets[0].id == int(mention["id"])


def test_dm_events_newest_first_with_sender_expanded(
        emulator: XEmulator, clock: EpochClock, client: tweepy.Client) -> None:
    emulator.add_dm(sender_id="900", username="frank", text="my ticket is 4567")
    clock.now += 5
    client.create_direct_message(participant_id=900, text="Thanks, looking at 4567")

    events = client.get_direct_message_events(
        event_types="MessageCreate", expansions=["sender_id"],
        dm_event_fields=["sender_id", "dm_conversation_id", "created_at"])

    assert [(e.sender_id, e.text) for e in events.data] == [
        (int(emulator.account.id), "Thanks, looking at 4567"), (900, "my ticket is 4567")]
    assert {e.dm_conversation_id for e in events.data} == {f"900-{emulator.account.id}"}
    assert events.data[1].created_at.isoformat() == "2026-01-01T00:00:00+00:00"
    assert {u.username for u in events.includes["users"]} == {"frank", "deskbridge_demo"}


def test_reply_and_dm_appear_in_posted_in_order(
        emulator: XEmulator, base_url: str, client: tweepy.Client) -> None:
    client.create_tweet(text="On it!", in_reply_to_tweet_id="1600000000000000000")
    sent = client.create_direct_message(participant_id=31, text="Please DM your order id").data

    posted = requests.get(base_url + "/_emulator/posted", timeout=5).json()["posted"]

    assert [(p["kind"], p["text"]) for p in posted] == [
        ("tweet", "On it!"), ("dm", "Please DM your order id")]
    assert posted[0]["in_reply_to_tweet_id"] == "1600000000000000000"
    assert posted[1]["dm_event_id"] == sent["dm_event_id"]
    assert sent["dm_conversation_id"] == f"31-{emulator.account.id}"
    assert emulator.posted() == posted


def test_duplicate_post_is_refused_like_x(client: tweepy.Client) -> None:
    client.create_tweet(text="Your refund is on its way.")
    with pytest.raises(tweepy.Forbidden, match="not allowed to create a Tweet with duplicate"):
        client.create_tweet(text="Your refund is on its way.")


def test_post_over_280_weighted_characters_is_refused(client: tweepy.Client) -> None:
    with pytest.raises(tweepy.BadRequest, match="Your Tweet text is too long"):
        client.create_tweet(text="日本" * 71)  # 142 CJK characters weigh 284


# -- auth, rate limits, failures --------------------------------------------------------------

def test_wrong_consumer_secret_is_unauthorized(emulator: XEmulator, base_url: str) -> None:
    settings = emulator.channel_settings(base_url).model_copy(
        update={"consumer_secret": SecretStr("not-the-secret")})
    with pytest.raises(tweepy.Unauthorized):
        make_client(settings).get_me()


def test_app_only_token_cannot_read_dms(client: tweepy.Client) -> None:
    with pytest.raises(tweepy.Forbidden, match="OAuth 2.0 Application-Only is forbidden"):
        client.get_direct_message_events(user_auth=False)


def test_spent_window_raises_too_many_requests_until_reset(
        clock: EpochClock, client: tweepy.Client) -> None:
    client.return_type = requests.Response
    first, second = client.get_direct_message_events(), client.get_direct_message_events()
    with pytest.raises(tweepy.TooManyRequests) as refused:
        client.get_direct_message_events()

    assert [r.headers["x-rate-limit-remaining"] for r in (first, second)] == ["1", "0"]
    assert first.headers["x-rate-limit-limit"] == "2"
    assert refused.value.reset_time == int(START) + 900
    assert refused.value.response.json()["title"] == "Too Many Requests"
    clock.now = START + 901
    assert client.get_direct_message_events().headers["x-rate-limit-remaining"] == "1"


def test_injected_429_then_503_then_success(
        emulator: XEmulator, base_url: str, client: tweepy.Client) -> None:
    control: dict[str, Any] = {"endpoint": "POST /2/tweets", "count": 1, "status": 429,
                               "reset_after": 60}
    assert requests.post(base_url + "/_emulator/fail", json=control, timeout=5).ok
    with pytest.raises(tweepy.TooManyRequests) as limited:
        client.create_tweet(text="first try")
    emulator.fail_next("POST /2/tweets", status=503)
    with pytest.raises(tweepy.TwitterServerError):
        client.create_tweet(text="second try")

    client.create_tweet(text="third try")

    assert limited.value.reset_time == int(START) + 60
    calls = requests.get(base_url + "/_emulator/calls", timeout=5).json()["calls"]
    assert calls == {"POST /2/tweets": 3}
    assert [p["text"] for p in emulator.posted()] == ["third try"]


def test_every_answer_says_it_is_the_emulator(base_url: str) -> None:
    answer = requests.get(base_url + "/2/users/me", timeout=5)
    assert answer.status_code == 401 and answer.headers["server"] == "deskbridge-x-emulator"
    assert answer.json() == {"title": "Unauthorized", "type": "about:blank", "status": 401,
                             "detail": "Unauthorized"}


# -- webhooks and Account Activity --------------------------------------------------------------

def bearer(client: tweepy.Client, method: str, route: str,
           body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A webhook-management call through tweepy's own request path (app-only bearer)."""
    result: dict[str, Any] = client.request(method, route, json=body).json()
    return result


def test_webhook_registers_after_a_correct_crc(
        client: tweepy.Client, receiver: WebhookReceiver) -> None:
    created = bearer(client, "POST", "/2/webhooks", {"url": receiver.url})["data"]
    hook_id = created["id"]
    subscribed = client.request(
        "POST", f"/2/account_activity/webhooks/{hook_id}/subscriptions/all", user_auth=True)

    assert created["valid"] is True and created["url"] == receiver.url
    assert bearer(client, "GET", "/2/webhooks") == {
        "data": [created], "meta": {"result_count": 1}}
    assert subscribed.json() == {"data": {"subscribed": True}}
    listed = bearer(client, "GET",
                    f"/2/account_activity/webhooks/{hook_id}/subscriptions/all/list")
    assert listed["data"]["subscriptions"] == [{"user_id": "1500000000000000001"}]


def test_webhook_with_wrong_crc_answer_is_refused(
        client: tweepy.Client, receiver: WebhookReceiver) -> None:
    receiver.secret = "someone-else's-secret"
    with pytest.raises(tweepy.BadRequest, match="CrcValidationFailed") as refused:
        client.request("POST", "/2/webhooks", json={"url": receiver.url})

    assert refused.value.response.json()["title"] == "Invalid Request"
    assert bearer(client, "GET", "/2/webhooks") == {"data": [], "meta": {"result_count": 0}}


def test_second_webhook_exceeds_the_limit(
        client: tweepy.Client, receiver: WebhookReceiver) -> None:
    bearer(client, "POST", "/2/webhooks", {"url": receiver.url})
    with pytest.raises(tweepy.BadRequest, match="WebhookLimitExceeded"):
        client.request("POST", "/2/webhooks", json={"url": receiver.url + "/other"})


def test_revalidation_failure_marks_webhook_invalid_and_stops_delivery(
        emulator: XEmulator, client: tweepy.Client, receiver: WebhookReceiver) -> None:
    hook_id = bearer(client, "POST", "/2/webhooks", {"url": receiver.url})["data"]["id"]
    receiver.secret = "rotated-without-telling-x"
    with pytest.raises(tweepy.BadRequest, match="CrcValidationFailed"):
        client.request("PUT", f"/2/webhooks/{hook_id}")

    assert bearer(client, "GET", "/2/webhooks")["data"][0]["valid"] is False
    assert emulator.deliver({"for_user_id": emulator.account.id}) == []


def test_delivered_event_is_signed_with_the_consumer_secret(
        emulator: XEmulator, base_url: str, client: tweepy.Client,
        receiver: WebhookReceiver) -> None:
    hook_id = bearer(client, "POST", "/2/webhooks", {"url": receiver.url})["data"]["id"]
    # Hand-written Account Activity event (only its bytes matter here).
    event = json.dumps({"for_user_id": emulator.account.id,
                        "tweet_create_events": [{"id_str": "1"}]}).encode()

    answer = requests.post(base_url + "/_emulator/deliver", data=event, timeout=5).json()

    assert answer["deliveries"] == [{"webhook_id": hook_id, "url": receiver.url,
                                     "status": 200}]
    body, headers = receiver.received[0]
    assert body == event
    assert headers["X-Twitter-Webhooks-Signature"] == x_hmac(Credentials().consumer_secret,
                                                             event)


def test_signature_helpers_follow_x_algorithm() -> None:
    assert crc_response_token("secret", "challenge") == x_hmac("secret", b"challenge")
    assert sign_webhook_body("secret", b'{"a":1}') == x_hmac("secret", b'{"a":1}')
    assert sign_webhook_body("secret", b'{"a":1}') != x_hmac("other", b'{"a":1}')


# -- the control surface over HTTP and the command ----------------------------------------------

def test_http_controls_feed_mentions_and_dms(
        emulator: XEmulator, base_url: str, client: tweepy.Client) -> None:
    post: Callable[..., requests.Response] = requests.post
    added = post(base_url + "/_emulator/mentions", timeout=5, json={
        "author_id": "808", "username": "gina", "text": "@deskbridge_demo ticket 99"}).json()
    post(base_url + "/_emulator/dms", timeout=5,
         json={"sender_id": "808", "username": "gina", "text": "hello"})

    mentions = client.get_users_mentions(emulator.account.id, tweet_fields=["author_id"])
    events = client.get_direct_message_events()

    assert [(t.id, t.author_id) for t in mentions.data] == [(int(added["data"]["id"]), 808)]
    assert [e.text for e in events.data] == ["hello"]
    bad = post(base_url + "/_emulator/fail", json={"endpoint": "GET /nowhere"}, timeout=5)
    assert bad.status_code == 400


def test_serve_prints_its_base_url_first_and_stops_on_sigterm() -> None:
    code = "from integrations.twitter.emulator import serve; serve()"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        answer = requests.get(base_url + "/_emulator/calls", timeout=5)
        assert base_url.startswith("http://127.0.0.1:") and answer.json() == {"calls": {}}
    finally:
        process.terminate()
    assert process.wait(timeout=5) == 0
