"""The Zendesk adapter with zenpy running for real; Zendesk answered by `responses`, or by
the Zendesk emulator over loopback HTTP (reading comments back).

Response bodies are hand-written in the shapes of Zendesk's API reference
(https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/), trimmed to the
fields deskbridge reads.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import responses

from integrations.errors import ProviderError, RateLimited
from integrations.events import Deletion
from integrations.helpdesk import DeletionNotice, HelpdeskComment, NewComment, NewTicket
from integrations.zendesk.adapter import Pacer, ZendeskHelpdesk
from integrations.zendesk.emulator import ZendeskEmulator
from integrations.zendesk.emulator import create_app as zendesk_app
from integrations.zendesk.settings import ZendeskSettings
from tests.factories import message
from tests.twitter.conftest import served

API = "https://acme.zendesk.com/api/v2"


def ticket_json(id: int, status: str = "open", requester: int = 900) -> dict[str, object]:
    return {"ticket": {"id": id, "status": status, "requester_id": requester,
                       "updated_at": "2026-11-21T10:00:00Z", "subject": "s", "tags": []}}


@pytest.fixture
def zd() -> ZendeskHelpdesk:
    settings = ZendeskSettings.model_validate({
        "type": "zendesk", "subdomain": "acme", "email": "agent@acme.example",
        "token": "zd-secret-token", "requests_per_minute": 700})
    return ZendeskHelpdesk("hd", settings)


@responses.activate
def test_ticket_is_read_fresh_and_missing_is_none(zd: ZendeskHelpdesk) -> None:
    responses.get(f"{API}/tickets/48213.json", json=ticket_json(48213, "solved"))
    responses.get(f"{API}/tickets/999.json", status=404,
                  json={"error": "RecordNotFound", "description": "Not found"})
    found = zd.get_ticket("48213")
    assert found is not None and (found.id, found.status, found.requester_id) == (
        "48213", "solved", "900")
    assert not found.is_closed and zd.get_ticket("999") is None
    assert zd.get_ticket("12abc") is None  # never asked: not a ticket id
    assert zd.get_ticket("\u0661\u0662") is None  # Arabic-Indic digits: str.isdigit() says yes
    assert len(responses.calls) == 2
    auth = responses.calls[0].request.headers["Authorization"]
    assert auth.startswith("Basic ")  # email/token:TOKEN, as Zendesk expects


def answer_new_ticket(*, requester: int, ticket: int, audit: int) -> None:
    """Zendesk's answers to making a requester, then a ticket (in the API reference's shapes)."""
    responses.post(f"{API}/users/create_or_update.json",
                   json={"user": {"id": requester, "name": f"User {requester}"}})
    responses.post(f"{API}/tickets.json", status=201,
                   json={**ticket_json(ticket), "audit": {"id": audit}})


@responses.activate
def test_new_ticket_creates_the_requester_and_sends_an_idempotency_key(
    zd: ZendeskHelpdesk,
) -> None:
    answer_new_ticket(requester=901, ticket=5001, audit=77001)
    m = message("1", text="<script>alert(1)</script> mijn pakket is kwijt")
    written = zd.create_ticket(NewTicket(m, subject="X from @user42", tags=("vip",)), "x:1000:1:h")
    assert (written.ticket_id, written.provider_id, written.requester_id) == ("5001", "77001", "901")
    user = json.loads(responses.calls[0].request.body)["user"]
    assert user["external_id"] == "x:42"
    assert user["identities"] == [{"type": "twitter", "value": "user42"}]
    create = responses.calls[1].request
    assert create.headers["Idempotency-Key"] == "x:1000:1:h"
    ticket = json.loads(create.body)["ticket"]
    assert ticket["requester_id"] == 901 and ticket["tags"] == ["deskbridge", "x", "vip"]
    assert ticket["comment"]["public"] is True and ticket["comment"]["author_id"] == 901
    html = ticket["comment"]["html_body"]
    assert "<script>" not in html and "&lt;script&gt;" in html  # customer text escaped
    assert "https://x.com/i/status/1" in html and "@user42" in html


@responses.activate
def test_a_post_whose_author_x_did_not_send_goes_to_one_placeholder_requester(
    zd: ZendeskHelpdesk,
) -> None:
    answer_new_ticket(requester=950, ticket=5002, audit=77002)
    known = message("3")
    m = dataclasses.replace(known, author=dataclasses.replace(
        known.author, user_id="", handle="", display_name="", profile_url=None))
    written = zd.create_ticket(NewTicket(m, subject="s", verified=False, public=False), "k3")
    assert written.requester_id == "950"
    user = json.loads(responses.calls[0].request.body)["user"]
    assert user["external_id"] == "x:unknown-author" and "identities" not in user
    comment = json.loads(responses.calls[1].request.body)["ticket"]["comment"]
    assert comment["public"] is False and comment["author_id"] is None
    assert "An unknown X user" in comment["html_body"]
    assert 'href="https://x.com/"' not in comment["html_body"]  # no link to nobody


@responses.activate
def test_unverified_message_is_an_internal_note_with_a_warning(zd: ZendeskHelpdesk) -> None:
    responses.put(f"{API}/tickets/500.json", json={**ticket_json(500), "audit": {"id": 1}})
    zd.add_comment(NewComment("500", message("2"), public=True, verified=False,
                              reason="UNVERIFIED: cites ticket 500"), "k")
    comment = json.loads(responses.calls[0].request.body)["ticket"]["comment"]
    assert comment["public"] is False and "UNVERIFIED" in comment["html_body"]
    assert "author_id" not in comment or comment["author_id"] is None


@responses.activate
def test_comment_on_a_closed_ticket_becomes_a_follow_up(zd: ZendeskHelpdesk) -> None:
    responses.put(f"{API}/tickets/777.json", status=422, json={
        "error": "RecordInvalid", "description": "Record validation errors",
        "details": {"status": [{"description": "Status: closed prevents ticket update"}]}})
    responses.post(f"{API}/tickets.json", status=201, json={**ticket_json(5002),
                                                             "audit": {"id": 2}})
    written = zd.add_comment(NewComment("777", message("3"), public=True, verified=True,
                                        reason="reply in thread", author_id="901"), "k")
    assert written.ticket_id == "5002"
    ticket = json.loads(responses.calls[1].request.body)["ticket"]
    assert ticket["via_followup_source_id"] == 777 and ticket["requester_id"] == 901
    assert responses.calls[1].request.headers["Idempotency-Key"] == "k:follow-up"


@responses.activate
def test_rate_limit_raises_with_retry_after_and_never_sleeps(zd: ZendeskHelpdesk) -> None:
    responses.get(f"{API}/tickets/1.json", status=429, headers={"Retry-After": "37"},
                  json={"error": "TooManyRequests"})
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        zd.get_ticket("1")
    assert caught.value.retry_after == 37 and time.monotonic() - started < 1
    assert len(responses.calls) == 1  # zenpy did not wait and try again


def defers_then_resumes(pacer: Pacer, now: list[float], wait: float) -> None:
    """The next call is deferred by `wait` seconds (never slept through); then it goes."""
    with pytest.raises(RateLimited) as caught:
        pacer.take()
    assert caught.value.retry_after == pytest.approx(wait)
    now[0] += wait
    pacer.take()


def test_pacer_defers_instead_of_waiting() -> None:
    now = [0.0]
    pacer = Pacer(120, clock=lambda: now[0])  # 2 a second
    for _ in range(120):
        pacer.take()
    defers_then_resumes(pacer, now, 0.5)


@responses.activate
def test_provider_errors_keep_no_secret(zd: ZendeskHelpdesk) -> None:
    responses.get(f"{API}/tickets/2.json", status=500, json={"error": "InternalError"})
    with pytest.raises(ProviderError) as caught:
        zd.get_ticket("2")
    assert caught.value.status == 500 and not caught.value.is_permanent
    assert "zd-secret-token" not in str(caught.value)


@responses.activate
def test_deletion_is_an_internal_note(zd: ZendeskHelpdesk) -> None:
    responses.put(f"{API}/tickets/5001.json", json={**ticket_json(5001), "audit": {"id": 3}})
    deletion = Deletion("x", "1000", "1", "42", datetime(2026, 11, 22, 10, tzinfo=UTC))
    zd.record_deletion(DeletionNotice("5001", deletion), "k")
    comment = json.loads(responses.calls[0].request.body)["ticket"]["comment"]
    assert comment["public"] is False and "deleted their post 1" in comment["html_body"]


@responses.activate
def test_a_comment_written_before_a_crash_is_found_by_its_marker(zd: ZendeskHelpdesk) -> None:
    responses.put(f"{API}/tickets/500.json", json={**ticket_json(500), "audit": {"id": 4}})
    zd.add_comment(NewComment("500", message("5"), public=True, verified=True, reason="r",
                              author_id="900"), "x:1000:5:helpdesk")
    written = json.loads(responses.calls[0].request.body)["ticket"]["comment"]["html_body"]
    responses.get(f"{API}/tickets/500/comments.json", json={
        "comments": [{"id": 111, "type": "Comment", "body": "other", "html_body": "<p>o</p>",
                      "public": True, "author_id": 1},
                     {"id": 222, "type": "Comment", "body": "ours", "html_body": written,
                      "public": True, "author_id": 900}], "next_page": None, "count": 2})
    found = zd.find_write("x:1000:5:helpdesk", "500")
    assert found is not None and found.provider_id == "222"
    assert zd.find_write("x:1000:6:helpdesk", "500") is None


@responses.activate
def test_new_ticket_carries_group_brand_and_priority(zd: ZendeskHelpdesk) -> None:
    responses.post(f"{API}/tickets.json", status=201, json={**ticket_json(5003),
                                                             "audit": {"id": 5}})
    zd.create_ticket(NewTicket(message("9"), subject="s", requester_id="900", group_id=360001,
                               brand_id=360002, priority="urgent"), "k9")
    ticket = json.loads(responses.calls[0].request.body)["ticket"]
    assert (ticket["group_id"], ticket["brand_id"], ticket["priority"]) == (
        360001, 360002, "urgent")
    assert len(responses.calls) == 1  # the requester was known: no user call


@responses.activate
def test_a_sender_is_found_by_a_twitter_identity_read_fresh(zd: ZendeskHelpdesk) -> None:
    responses.get(f"{API}/users/show_many.json", json={"users": [], "next_page": None,
                                                       "previous_page": None, "count": 0})
    responses.get(f"{API}/users/search.json", json={"users": [
        {"id": 701, "name": "Someone else", "external_id": "x:999"},  # another X account
        {"id": 702, "name": "jan (namesake)", "external_id": None},
        {"id": 703, "name": "Jan de Vries", "external_id": None},
    ], "next_page": None, "previous_page": None, "count": 3})
    responses.get(f"{API}/users/702/identities.json", json={"identities": [
        {"id": 1, "user_id": 702, "type": "email", "value": "jan@example.com"}]})
    responses.get(f"{API}/users/703/identities.json", json={"identities": [
        {"id": 2, "user_id": 703, "type": "twitter", "value": "JanDeVries"}]})
    user = zd.find_user(dataclasses.replace(message("1", author_id="42").author,
                                            handle="jandevries"))
    assert user is not None and (user.id, user.name) == ("703", "Jan de Vries")
    asked = [c.request.url for c in responses.calls]
    assert asked[0].endswith("/users/show_many.json?external_ids=x:42")
    assert "query=jandevries" in asked[1]
    assert not any("/users/701/" in url for url in asked)  # known as someone else on X


@responses.activate
def test_no_twitter_identity_means_no_user(zd: ZendeskHelpdesk) -> None:
    responses.get(f"{API}/users/show_many.json", json={"users": [], "count": 0})
    responses.get(f"{API}/users/search.json", json={"users": [], "count": 0})
    assert zd.find_user(message("1", author_id="42").author) is None
    assert len(responses.calls) == 2


def test_pacer_pauses_when_zendesk_says_the_accounts_minute_is_nearly_spent() -> None:
    now = [0.0]
    pacer = Pacer(700, clock=lambda: now[0])
    pacer.observe(limit=700, remaining=200, reset_seconds=41)  # plenty left: go on
    pacer.take()
    pacer.observe(limit=700, remaining=30, reset_seconds=41)  # within the 5 % reserve
    defers_then_resumes(pacer, now, 41)


@responses.activate
def test_the_accounts_rate_limit_headers_pause_the_next_call(zd: ZendeskHelpdesk) -> None:
    # Header names and values as in Zendesk's "Best practices for avoiding rate limiting".
    responses.get(f"{API}/tickets/1.json", json=ticket_json(1), headers={
        "x-rate-limit": "700", "ratelimit-limit": "700", "x-rate-limit-remaining": "12",
        "ratelimit-remaining": "12", "ratelimit-reset": "41"})
    assert zd.get_ticket("1") is not None
    with pytest.raises(RateLimited) as caught:
        zd.get_ticket("1")
    assert 40 <= caught.value.retry_after <= 41
    assert len(responses.calls) == 1  # the second call never left


def test_two_processes_share_the_accounts_budget_through_zendesks_count() -> None:
    from integrations.zendesk.emulator import ZendeskEmulator
    from integrations.zendesk.emulator import create_app as zendesk_app
    from tests.twitter.conftest import served

    # The emulator's minute stands still, so the test cannot straddle a window's reset.
    emulator = ZendeskEmulator(requests_per_minute=40, clock=lambda: 1_795_860_000.0)
    ticket = emulator.add_ticket(requester_id=emulator.add_user("Klant")["id"], body="Hallo")
    with served(zendesk_app(emulator)) as url:
        settings = ZendeskSettings.model_validate({
            "type": "zendesk", "subdomain": "acme", "email": emulator.credentials.email,
            "token": emulator.credentials.token, "requests_per_minute": 40, "base_url": url})
        first, second = ZendeskHelpdesk("hd", settings), ZendeskHelpdesk("hd", settings)
        answered = 0
        with pytest.raises(RateLimited):  # the first process spends the account's minute...
            for _ in range(40):
                first.get_ticket(str(ticket["id"]))
                answered += 1
        assert answered == 38  # ...down to the reserve of 2 it leaves to everyone else
        second.get_ticket(str(ticket["id"]))  # a second process learns it from one answer
        with pytest.raises(RateLimited):
            second.get_ticket(str(ticket["id"]))
    assert emulator.calls == {"GET /api/v2/tickets/{ticket_id}": 39}  # and Zendesk never said 429


# ---------------------------------------------------------------- reading a comment back


@pytest.fixture
def account() -> Iterator[tuple[ZendeskEmulator, ZendeskHelpdesk]]:
    """The Zendesk emulator on loopback, and the adapter pointed at it."""
    emulator = ZendeskEmulator(first_ticket_id=48213)
    with served(zendesk_app(emulator)) as url:
        yield emulator, ZendeskHelpdesk("hd", emulator.helpdesk_settings(url))


def test_a_comment_is_read_back_with_its_authors_role(
    account: tuple[ZendeskEmulator, ZendeskHelpdesk],
) -> None:
    emulator, zd = account
    customer = emulator.add_user("Bea", twitter="bea")
    ticket = emulator.add_ticket(requester_id=customer["id"], body="Mijn factuur klopt niet")
    answer = emulator.agent_comment(ticket["id"], "We passen hem aan.")
    note = emulator.agent_comment(ticket["id"], "intern", public=False)
    own = emulator.requester_comment(ticket["id"], "Dank!")
    before = sum(emulator.calls.values())
    found = zd.get_comment(str(ticket["id"]), str(answer["id"]))
    assert sum(emulator.calls.values()) - before == 1  # one call
    assert found == HelpdeskComment(str(answer["id"]), str(ticket["id"]), "We passen hem aan.",
                                    True, str(emulator.agent_id), "agent")
    assert found.is_by_staff
    private = zd.get_comment(str(ticket["id"]), str(note["id"]))
    assert private is not None and not private.public
    customers = zd.get_comment(str(ticket["id"]), str(own["id"]))
    assert customers is not None and customers.author_role == "end-user"
    assert not customers.is_by_staff


def test_a_comment_on_another_ticket_or_no_ticket_is_none(
    account: tuple[ZendeskEmulator, ZendeskHelpdesk],
) -> None:
    emulator, zd = account
    customer = emulator.add_user("Ard", twitter="ard")
    mine = emulator.add_ticket(requester_id=customer["id"], body="Router knippert")
    other = emulator.add_ticket(requester_id=customer["id"], body="Andere vraag")
    answer = emulator.agent_comment(mine["id"], "Herstart hem even.")
    assert zd.get_comment(str(other["id"]), str(answer["id"])) is None
    assert zd.get_comment("999999", str(answer["id"])) is None  # no such ticket: a 404
    assert zd.get_comment(str(mine["id"]), "\u0661\u0662") is None  # never asked


def test_an_older_comment_is_found_on_a_later_page(
    account: tuple[ZendeskEmulator, ZendeskHelpdesk],
) -> None:
    emulator, zd = account
    customer = emulator.add_user("Cas", twitter="cas")
    ticket = emulator.add_ticket(requester_id=customer["id"], body="Vraag")
    first = emulator.agent_comment(ticket["id"], "Eerste antwoord")
    for n in range(100):
        emulator.agent_comment(ticket["id"], f"bericht {n}", public=False)
    found = zd.get_comment(str(ticket["id"]), str(first["id"]))
    assert found is not None and found.body == "Eerste antwoord"
