"""The Zendesk emulator, driven by the real zenpy client over loopback HTTP.

Every Zendesk call here goes through `zenpy_client` (zenpy builds, authenticates and parses each
request itself) or plain `requests` where zenpy has no method; the emulator runs on a real port.
Webhook signatures are checked with hmac here, per Zendesk's documented algorithm
(https://developer.zendesk.com/documentation/webhooks/verifying/).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from flask import Flask, Response, request
from zenpy.lib.api_objects import Comment, Identity, Ticket, Trigger, User, Webhook
from zenpy.lib.exception import APIException, RatelimitBudgetExceeded, RecordNotFoundException

from integrations.zendesk.emulator import (
    Credentials,
    ZendeskEmulator,
    create_app,
    serve,
    sign_webhook,
    zenpy_client,
)
from tests.conftest import EpochClock
from tests.twitter.conftest import served

START = 1_795_860_000.0  # 2026-11-28T10:00:00Z, on a minute boundary
AUTH = (f"{Credentials.email}/token", Credentials.token)



@pytest.fixture
def clock() -> EpochClock:
    return EpochClock(START)


@pytest.fixture
def emulator(clock: EpochClock) -> ZendeskEmulator:
    return ZendeskEmulator(clock=clock)


@pytest.fixture
def base_url(emulator: ZendeskEmulator) -> Iterator[str]:
    with served(create_app(emulator)) as url:
        yield url


@pytest.fixture
def zen(base_url: str) -> Any:
    return zenpy_client(base_url)


@dataclass
class Receiver:
    """A webhook consumer on loopback that records every request it gets."""

    url: str = ""
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    app = Flask("zendesk_webhook_receiver")

    @app.post("/hooks/zendesk")
    def receive() -> Response:
        hook.received.append((request.get_data(), dict(request.headers)))
        return Response(status=200)

    with served(app) as url:
        hook.url = url + "/hooks/zendesk"
        yield hook


def _customer(zen: Any, handle: str = "ann_tweets", external_id: str = "x:1001") -> Any:
    return zen.users.create(User(name="Ann Example", email=f"{handle}@example.com",
                                 external_id=external_id,
                                 identities=[{"type": "twitter", "value": handle}]))


def _api(base_url: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("auth", AUTH)
    return requests.request(method, base_url + "/api/v2" + path, timeout=5, **kwargs)


# -- tickets and comments ----------------------------------------------------------------------

def test_ticket_create_show_update_and_comments_through_zenpy(zen: Any, base_url: str,
                                                              emulator: ZendeskEmulator) -> None:
    ann = _customer(zen)
    created = zen.tickets.create(Ticket(
        subject="My order never came", requester_id=ann.id, tags=["deskbridge", "X"],
        external_id="x:1860000000000000001", brand_id=7,
        comment=Comment(body="Order 5512 is late", author_id=ann.id)))

    assert created.ticket.id == 1
    assert created.ticket.status == "new"
    assert created.ticket.tags == ["deskbridge", "x"]
    assert [e["type"] for e in created.audit.events][:1] == ["Comment"]

    ticket = zen.tickets(id=1)
    ticket.comment = Comment(body="Looking into it now.", public=False)
    ticket.status = "pending"
    updated = zen.tickets.update(ticket)
    assert updated.ticket.status == "pending"

    comments = list(zen.tickets.comments(1))
    assert [(c.author_id, c.body, c.public) for c in comments] == [
        (ann.id, "Order 5512 is late", True),
        (emulator.agent_id, "Looking into it now.", False)]
    assert comments[1].html_body == \
        '<div class="zd-comment" dir="auto"><p dir="auto">Looking into it now.</p></div>'
    assert comments[1].plain_body == "Looking into it now."

    shown = _api(base_url, "GET", "/tickets/1.json", params={"include": "users"}).json()
    assert shown["ticket"]["external_id"] == "x:1860000000000000001"
    assert shown["ticket"]["brand_id"] == 7
    assert {u["id"] for u in shown["users"]} == {ann.id, emulator.agent_id}


def test_a_closed_ticket_refuses_an_update_with_zendesks_422(zen: Any, base_url: str,
                                                             emulator: ZendeskEmulator) -> None:
    ann = _customer(zen)
    zen.tickets.create(Ticket(subject="old", requester_id=ann.id, comment=Comment(body="hi")))
    emulator.close_ticket(1)

    ticket = zen.tickets(id=1)
    ticket.comment = Comment(body="Are you still there?", public=True)
    with pytest.raises(APIException) as refused:
        zen.tickets.update(ticket)

    assert refused.value.response.status_code == 422
    assert json.loads(str(refused.value)) == {
        "error": "RecordInvalid", "description": "Record validation errors",
        "details": {"status": [{"description": "Status: closed prevents ticket update"}]}}
    assert len(emulator.comments(1)) == 1
    # Tags (with subject and priority) stay editable on closed tickets.
    retag = _api(base_url, "PUT", "/tickets/1.json", json={"ticket": {"tags": ["archived"]}})
    assert retag.status_code == 200
    assert retag.json()["ticket"]["tags"] == ["archived"]


def test_a_requester_reply_reopens_a_solved_ticket_but_an_agent_note_does_not(
        zen: Any, emulator: ZendeskEmulator) -> None:
    ann = _customer(zen)
    zen.tickets.create(Ticket(subject="s", requester_id=ann.id, comment=Comment(body="hi")))
    emulator.set_status(1, "solved")

    emulator.agent_comment(1, "Closing the loop", public=False)
    assert emulator.ticket(1)["status"] == "solved"

    ticket = zen.tickets(id=1)
    ticket.comment = Comment(body="It broke again", author_id=ann.id, public=True)
    assert zen.tickets.update(ticket).ticket.status == "open"


def test_a_missing_ticket_is_zendesks_record_not_found(zen: Any) -> None:
    with pytest.raises(RecordNotFoundException) as missing:
        zen.tickets(id=404)
    assert json.loads(str(missing.value)) == {"error": "RecordNotFound",
                                              "description": "Not found"}


def test_redacting_a_string_in_a_comment(zen: Any, base_url: str,
                                         emulator: ZendeskEmulator) -> None:
    ann = _customer(zen)
    zen.tickets.create(Ticket(subject="card", requester_id=ann.id,
                              comment=Comment(body="My card is 4111 and my PIN is 1234")))
    comment_id = emulator.comments(1)[0]["id"]

    redacted = zen.tickets.comment_redact(1, comment_id, "4111")
    assert redacted.body == "My card is \u2587\u2587\u2587\u2587 and my PIN is 1234"

    answer = _api(base_url, "PUT", f"/comment_redactions/{comment_id}.json", json={
        "ticket_id": 1, "html_body": "<div>my PIN is <redact>1234</redact></div>"})
    assert answer.status_code == 200
    assert answer.json()["comment"]["body"].endswith("my PIN is \u2587\u2587\u2587\u2587")
    assert "1234" not in emulator.comments(1)[0]["html_body"]


# -- users, identities, search -----------------------------------------------------------------

def test_users_are_found_by_external_id_and_by_twitter_identity(zen: Any) -> None:
    ann = _customer(zen, handle="Ann_Tweets", external_id="x:42")
    _customer(zen, handle="bob", external_id="x:43")

    assert [u.id for u in zen.users.search(external_id="x:42")] == [ann.id]
    assert [u.id for u in zen.search(type="user", twitter="ann_tweets")] == [ann.id]
    assert [u.id for u in zen.users.search(query="twitter:Ann_Tweets")] == [ann.id]
    assert list(zen.users.search(external_id="x:99")) == []


def test_identities_are_listed_added_and_kept_unique(zen: Any) -> None:
    ann = _customer(zen)
    bob = _customer(zen, handle="bob", external_id="x:2")

    added = zen.users.identities.create(ann.id, Identity(type="twitter", value="@ann_alt"))
    assert (added.type, added.value, added.primary) == ("twitter", "ann_alt", False)
    kinds = [(i.type, i.value) for i in zen.users.identities(ann.id)]
    assert kinds == [("email", "ann_tweets@example.com"), ("twitter", "ann_tweets"),
                     ("twitter", "ann_alt")]

    with pytest.raises(APIException) as taken:
        zen.users.identities.create(bob.id, Identity(type="twitter", value="ANN_ALT"))
    assert taken.value.response.status_code == 422
    assert json.loads(str(taken.value))["details"]["value"][0]["error"] == "DuplicateValue"


def test_create_or_update_matches_on_external_id(base_url: str) -> None:
    body = {"user": {"name": "Cy", "external_id": "x:7", "user_fields": {"x_id": "7"}}}
    first = _api(base_url, "POST", "/users/create_or_update.json", json=body)
    body["user"]["name"] = "Cy Renamed"
    second = _api(base_url, "POST", "/users/create_or_update.json", json=body)

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["user"]["id"] == first.json()["user"]["id"]
    assert second.json()["user"]["name"] == "Cy Renamed"
    assert second.json()["user"]["user_fields"] == {"x_id": "7"}


def test_search_finds_a_requesters_tickets_that_are_not_closed(zen: Any, base_url: str,
                                                               emulator: ZendeskEmulator) -> None:
    ann = _customer(zen)
    for subject in ("first", "second", "third"):
        zen.tickets.create(Ticket(subject=subject, requester_id=ann.id,
                                  comment=Comment(body=subject)))
    emulator.close_ticket(2)

    found = _api(base_url, "GET", "/search.json",
                 params={"query": f"type:ticket requester:{ann.id} status<closed"}).json()
    assert [r["id"] for r in found["results"]] == [1, 3]
    assert {r["result_type"] for r in found["results"]} == {"ticket"}
    assert (found["count"], found["next_page"]) == (2, None)
    assert [t.id for t in zen.users.requested(ann.id)] == [1, 2, 3]


# -- authentication, rate limits, failures, idempotency ----------------------------------------

def test_wrong_credentials_get_zendesks_401(base_url: str) -> None:
    answer = _api(base_url, "GET", "/users/me.json",
                  auth=(f"{Credentials.email}/token", "wrong"))
    assert answer.status_code == 401
    assert answer.json() == {"error": "Couldn't authenticate you"}

    bearer = _api(base_url, "GET", "/users/me.json", auth=None,
                  headers={"Authorization": f"Bearer {Credentials.oauth_token}"})
    assert bearer.json()["user"]["email"] == Credentials.email


def test_429_carries_retry_after_and_zenpy_raises_at_once(clock: EpochClock) -> None:
    emulator = ZendeskEmulator(clock=clock, requests_per_minute=2)
    clock.now = START + 15
    with served(create_app(emulator)) as url:
        zen = zenpy_client(url)
        first = _api(url, "GET", "/users/me.json")
        assert first.headers["X-Rate-Limit"] == "2"
        assert first.headers["X-Rate-Limit-Remaining"] == "1"
        assert first.headers["ratelimit-reset"] == "45"
        zen.users.me()

        began = time.monotonic()
        with pytest.raises(APIException) as limited:
            zen.users.me()
        assert time.monotonic() - began < 1.0
        assert limited.value.response.status_code == 429
        assert limited.value.response.headers["Retry-After"] == "45"
        assert limited.value.response.text == \
            "Number of allowed API requests per minute exceeded"

        sleepy = zenpy_client(url, raise_on_rate_limit=False, ratelimit_budget=0)
        with pytest.raises(RatelimitBudgetExceeded):
            sleepy.users.me()
        assert time.monotonic() - began < 1.0

        clock.now = START + 60
        assert zen.users.me().email == Credentials.email


def test_injected_failures_and_call_counts(zen: Any, base_url: str,
                                           emulator: ZendeskEmulator) -> None:
    emulator.fail_next("GET /api/v2/users/{user_id}", status=503, retry_after=7)
    with pytest.raises(requests.HTTPError) as failed:
        zen.users(id=emulator.agent_id)
    assert failed.value.response.status_code == 503
    assert failed.value.response.headers["Retry-After"] == "7"
    assert zen.users(id=emulator.agent_id).role == "agent"

    requests.get(base_url + "/_emulator/tickets", timeout=5)
    assert emulator.calls == {"GET /api/v2/users/{user_id}": 2}
    with pytest.raises(ValueError):
        emulator.fail_next("GET /api/v2/nowhere")


def test_idempotency_key_replays_the_first_answer(base_url: str,
                                                  emulator: ZendeskEmulator) -> None:
    requester = emulator.add_user("Dee", email="dee@example.com")
    body = {"ticket": {"subject": "Printer offline", "requester_id": requester["id"],
                       "comment": {"body": "Restarting doesn't help."}}}
    headers = {"Idempotency-Key": "x:dm:1860000000000000042"}

    first = _api(base_url, "POST", "/tickets.json", json=body, headers=headers)
    again = _api(base_url, "POST", "/tickets.json", json=body, headers=headers)

    assert (first.status_code, again.status_code) == (201, 201)
    assert first.headers["x-idempotency-lookup"] == "miss"
    assert again.headers["x-idempotency-lookup"] == "hit"
    assert again.json() == first.json()
    assert len(emulator.tickets) == 1

    body["ticket"]["subject"] = "Something else"
    clash = _api(base_url, "POST", "/tickets.json", json=body, headers=headers)
    assert clash.status_code == 400
    assert clash.json() == {"error": "IdempotentRequestError",
                            "description": "Request parameters don't match the given "
                                           "idempotency key"}
    assert len(emulator.tickets) == 1


# -- webhooks and triggers ---------------------------------------------------------------------

def test_webhook_and_trigger_crud_through_zenpy(zen: Any, base_url: str) -> None:
    hook = zen.webhooks.create(Webhook(name="deskbridge", endpoint="http://127.0.0.1:9/h",
                                       http_method="POST", request_format="json",
                                       status="active",
                                       subscriptions=["conditional_ticket_events"]))
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", hook.id)
    assert [w.id for w in zen.webhooks()] == [hook.id]
    hook.status = "inactive"
    assert zen.webhooks.patch(hook).status_code == 204
    assert zen.webhooks(id=hook.id).status == "inactive"
    secret = zen.webhooks.show_secret(hook)
    assert (secret.algorithm, len(secret.secret) > 20) == ("SHA256", True)

    trigger = zen.triggers.create(Trigger(
        title="deskbridge: public replies", conditions={"all": [
            {"field": "comment_is_public", "operator": "is", "value": "true"}]},
        actions=[{"field": "notification_webhook", "value": [hook.id, "{}"]}]))
    assert [t.title for t in zen.triggers()] == ["deskbridge: public replies"]
    trigger.active = False
    assert zen.triggers.update(trigger).active is False
    found = _api(base_url, "GET", "/triggers/search.json", params={"query": "deskbridge"})
    assert [t["id"] for t in found.json()["triggers"]] == [trigger.id]

    no_action = _api(base_url, "PUT", f"/triggers/{trigger.id}.json",
                     json={"trigger": {"conditions": {"all": []}}})
    assert no_action.status_code == 422
    zen.triggers.delete(trigger)
    zen.webhooks.delete(hook)
    assert list(zen.triggers()) == [] and list(zen.webhooks()) == []


def test_a_public_agent_reply_fires_a_signed_webhook(zen: Any, base_url: str, clock: EpochClock,
                                                     emulator: ZendeskEmulator,
                                                     receiver: Receiver) -> None:
    hook = zen.webhooks.create(Webhook(name="deskbridge", endpoint=receiver.url,
                                       http_method="POST", request_format="json",
                                       status="active",
                                       subscriptions=["conditional_ticket_events"]))
    secret = zen.webhooks.show_secret(hook).secret
    template = json.dumps({
        "ticket_id": "{{ticket.id}}", "comment_id": "{{ticket.latest_comment.id}}",
        "body": "{{ticket.latest_comment.value}}",
        "public": "{{ticket.latest_comment.is_public}}",
        "author": "{{ticket.latest_comment.author.name}}", "tags": "{{ticket.tags}}",
        "updater": "{{current_user.name}}", "typo": "{{ticket.latest_comment_id}}"})
    zen.triggers.create(Trigger(
        title="deskbridge: agent replied", conditions={"all": [
            {"field": "update_type", "operator": "is", "value": "Change"},
            {"field": "comment_is_public", "operator": "is", "value": "true"},
            {"field": "current_tags", "operator": "includes", "value": "deskbridge"}]},
        actions=[{"field": "notification_webhook", "value": [hook.id, template]}]))
    zen.triggers.create(Trigger(
        title="deskbridge: verified", conditions={"all": [
            {"field": "current_tags", "operator": "includes", "value": "deskbridge_verified"}]},
        actions=[{"field": "notification_webhook",
                  "value": [hook.id, '{"ticket_id": "{{ticket.id}}", "tags": "{{ticket.tags}}"}'
                            ]}]))
    ann = emulator.add_user("Ann Example", twitter="ann_tweets")
    emulator.add_ticket(requester_id=ann["id"], subject="late", body="Where is my order?",
                        tags=["deskbridge"])
    clock.now = START + 3600

    emulator.agent_comment(1, "An internal note", public=False)
    reply = emulator.agent_comment(1, 'It ships "today"\nSorry!')
    emulator.set_tags(1, ["deskbridge", "deskbridge_verified"])
    deliveries = emulator.wait_for_deliveries(2)

    assert [d["status"] for d in deliveries] == [200, 200]
    assert len(receiver.received) == 2
    by_kind = {("comment_id" in json.loads(raw)): (raw, headers)
               for raw, headers in receiver.received}
    raw, headers = by_kind[True]
    assert json.loads(raw) == {
        "ticket_id": "1", "comment_id": str(reply["id"]), "body": 'It ships "today"\nSorry!',
        "public": "true", "author": "Deskbridge Agent", "tags": "deskbridge",
        "updater": "Deskbridge Agent", "typo": ""}
    timestamp = headers["X-Zendesk-Webhook-Signature-Timestamp"]
    assert timestamp == "2026-11-28T11:00:00Z"
    expected = base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + raw,
                                         hashlib.sha256).digest()).decode()
    assert headers["X-Zendesk-Webhook-Signature"] == expected == \
        sign_webhook(secret, timestamp, raw)
    assert headers["X-Zendesk-Webhook-Id"] == hook.id
    assert headers["X-Zendesk-Webhook-Invocation-Id"].isdigit()
    assert json.loads(by_kind[False][0]) == {"ticket_id": "1",
                                             "tags": "deskbridge deskbridge_verified"}


def test_an_inactive_webhook_is_not_called(base_url: str, emulator: ZendeskEmulator,
                                           receiver: Receiver) -> None:
    hook = _api(base_url, "POST", "/webhooks", json={"webhook": {
        "name": "off", "endpoint": receiver.url, "http_method": "POST",
        "request_format": "json", "status": "inactive",
        "subscriptions": ["conditional_ticket_events"]}}).json()["webhook"]
    _api(base_url, "POST", "/triggers.json", json={"trigger": {
        "title": "any update", "conditions": {"all": []},
        "actions": [{"field": "notification_webhook", "value": [hook["id"], "{}"]}]}})
    ann = emulator.add_user("Ann")
    emulator.add_ticket(requester_id=ann["id"], body="hello")
    emulator.agent_comment(1, "reply")

    with pytest.raises(TimeoutError):
        emulator.wait_for_deliveries(1, timeout=0.2)
    assert receiver.received == []


# -- the control surface and serving -----------------------------------------------------------

def test_controls_over_http_are_not_counted_as_zendesk_calls(base_url: str,
                                                             emulator: ZendeskEmulator) -> None:
    user = requests.post(base_url + "/_emulator/users", timeout=5,
                         json={"name": "Eve", "twitter": "eve"}).json()["user"]
    ticket = requests.post(base_url + "/_emulator/tickets", timeout=5, json={
        "requester_id": user["id"], "body": "hi", "tags": ["deskbridge"]}).json()["ticket"]
    requests.post(base_url + f"/_emulator/tickets/{ticket['id']}/agent_comment", timeout=5,
                  json={"body": "hello Eve"})
    closed = requests.post(base_url + f"/_emulator/tickets/{ticket['id']}/close", timeout=5)
    refused = requests.post(base_url + f"/_emulator/tickets/{ticket['id']}/agent_comment",
                            timeout=5, json={"body": "too late"})

    assert closed.json()["ticket"]["status"] == "closed"
    assert refused.status_code == 422
    assert [c["body"] for c in emulator.comments(ticket["id"])] == ["hi", "hello Eve"]
    assert emulator.calls == {}


def test_serve_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(ValueError):
        serve(host="0.0.0.0")
