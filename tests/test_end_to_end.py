"""End to end: the X emulator, the Zendesk emulator and deskbridge, over loopback HTTP.

tweepy and zenpy run for real against the emulators; deskbridge is served on a loopback port,
and `deskbridge zendesk setup` installs its webhook and triggers in the Zendesk emulator, so
an agent's comment there fires a signed webhook back to deskbridge. X's deliveries are the
recorded mention (tests/payloads/x/account_activity/tweet_create_mention.json), hand-modified
for each case (ids, author, text), signed as X signs them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e_world import World, calls, requester, running_world

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path) as w:
        yield w


def test_requester_citing_their_ticket_gets_a_public_comment_and_nothing_else(
    world: World,
) -> None:
    ticket = world.zd.add_ticket(requester_id=requester(world), body="Mijn pakket is kwijt")
    before_tickets, before = len(world.zd.tickets), calls(world.zd)
    world.tweet(f"@brand nog steeds niks over #{ticket['id']}")
    world.settle()
    *_, comment = world.comments(ticket["id"])
    assert comment["public"] is True and comment["author_id"] == ticket["requester_id"]
    assert "nog steeds niks" in comment["body"]
    assert len(world.zd.tickets) == before_tickets
    assert calls(world.zd) - before <= 2  # read the ticket (its requester sideloaded), comment


def test_stranger_gets_an_unverified_note_until_an_agent_confirms(world: World) -> None:
    owner = requester(world, "1111", "eigenaar")
    ticket = world.zd.add_ticket(requester_id=owner, body="Storing", tags=["deskbridge"])
    world.tweet(f"@brand zaak {ticket['id']}, wanneer hoor ik iets?", author="7777",
                handle="vreemde")
    world.settle()
    note = world.comments(ticket["id"])[-1]
    assert note["public"] is False and "UNVERIFIED" in note["body"]
    world.zd.agent_comment(ticket["id"], "Wie bent u precies?", public=True)
    world.zd.wait_for_deliveries(1)
    world.settle()
    assert world.x.posted() == []  # nothing said back to the stranger, not even an answer
    world.zd.set_tags(ticket["id"], ["deskbridge", "deskbridge_verified"])
    world.zd.wait_for_deliveries(2)  # the answer's, then the tag's
    (claim,) = world.runtime.store.identities_for("x", "7777")
    assert claim.status == "verified"
    world.tweet("@brand en?", author="7777", handle="vreemde")
    world.settle()
    latest = world.comments(ticket["id"])[-1]
    assert latest["public"] is True and "en?" in latest["body"]


def test_an_agent_can_confirm_and_answer_a_claim_in_one_update(world: World) -> None:
    owner = requester(world, "1212", "eigenaar2")
    ticket = world.zd.add_ticket(requester_id=owner, body="Storing", tags=["deskbridge"])
    post = world.tweet(f"@brand dossier {ticket['id']}: ik ben het, nieuw account",
                       author="7878", handle="tweede_account")
    world.settle()
    assert world.comments(ticket["id"])[-1]["public"] is False and world.x.posted() == []
    # A macro: the tag that confirms the claim and the public answer, in one update; its two
    # webhooks (comment, tagged) may reach deskbridge in either order.
    world.zd.agent_comment(ticket["id"], "Dank! De monteur komt morgen.", public=True,
                           tags=["deskbridge", "deskbridge_verified"])
    world.zd.wait_for_deliveries(2)
    world.settle()
    (reply,) = [p for p in world.x.posted() if p["kind"] == "tweet"]
    assert reply["in_reply_to_tweet_id"] == post and reply["text"] == "Dank! De monteur komt morgen."
    (claim,) = world.runtime.store.identities_for("x", "7878")
    assert claim.status == "verified"
    assert world.runtime.store.dead_letters() == []


def test_new_sender_opens_a_ticket_and_the_agent_answer_goes_back_once(world: World) -> None:
    before = calls(world.zd)
    post = world.tweet("@brand mijn internet ligt eruit", author="5555", handle="nieuw")
    world.settle()
    new_ticket_calls = calls(world.zd) - before
    (ticket,) = [t for t in world.zd.tickets if "deskbridge" in t["tags"]]
    (user,) = [u for u in world.zd.users if u.get("external_id") == "x:5555"]
    assert ticket["requester_id"] == user["id"]
    assert {"type": "twitter", "value": "nieuw"} in [
        {"type": i["type"], "value": i["value"]} for i in world.zd.identities(user["id"])]
    assert new_ticket_calls <= 4

    world.zd.agent_comment(ticket["id"], "Sorry! We sturen een monteur.", public=True)
    world.zd.agent_comment(ticket["id"], "intern: monteur gebeld", public=False)
    world.zd.wait_for_deliveries(1)
    world.settle()
    (reply,) = [p for p in world.x.posted() if p["kind"] == "tweet"]
    assert reply["in_reply_to_tweet_id"] == post and reply["text"] == "Sorry! We sturen een monteur."

    before_thread = calls(world.zd)
    world.tweet("@brand top, dank!", author="5555", handle="nieuw", reply_to=post)
    world.settle()
    assert world.comments(ticket["id"])[-1]["body"].count("top, dank!") == 1
    assert calls(world.zd) - before_thread <= 1  # a thread reply: only the comment


def test_a_customer_zendesk_knows_by_twitter_handle_gets_their_own_ticket(world: World) -> None:
    # Made by Zendesk's own X channel, say: a twitter identity, no deskbridge external_id.
    known = world.zd.add_user("Jan de Vries", twitter="jandevries")
    ticket = world.zd.add_ticket(requester_id=known["id"], body="Factuur klopt niet")
    world.tweet(f"@brand ticket #{ticket['id']}: nog steeds fout", author="6161",
                handle="JanDeVries")
    world.settle()
    latest = world.comments(ticket["id"])[-1]
    assert latest["public"] is True and "nog steeds fout" in latest["body"]
    assert latest["author_id"] == known["id"]  # on their own ticket, as themselves

    world.tweet("@brand en nog iets anders", author="6161", handle="jandevries")
    world.settle()  # no number this time: the known customer's open ticket
    assert "nog iets anders" in world.comments(ticket["id"])[-1]["body"]
    assert len(world.zd.tickets) == 1
    assert not [u for u in world.zd.users if u.get("external_id") == "x:6161"]


def test_a_new_ticket_for_a_customer_zendesk_knows_by_handle_is_theirs(world: World) -> None:
    known = world.zd.add_user("Fatima El Amrani", twitter="fatima_ea")
    world.tweet("@brand mijn bestelling is niet aangekomen", author="6262", handle="fatima_ea")
    world.settle()
    (ticket,) = [t for t in world.zd.tickets if "deskbridge" in t["tags"]]
    assert ticket["requester_id"] == known["id"]  # not a second user with the same handle
    assert [u["id"] for u in world.zd.users if u["name"] == "Fatima El Amrani"] == [known["id"]]


def test_a_handle_that_changed_hands_is_not_its_old_owner(world: World) -> None:
    # deskbridge knows @oudehandle's former owner as X user 8080; 9090 now has the handle.
    former = world.zd.add_user("Vorige eigenaar", twitter="oudehandle", external_id="x:8080")
    ticket = world.zd.add_ticket(requester_id=former["id"], body="Oude klacht", tags=["deskbridge"])
    world.tweet(f"@brand ticket {ticket['id']} graag status", author="9090", handle="oudehandle")
    world.settle()
    (note,) = world.comments(ticket["id"])[1:]
    assert note["public"] is False  # a claim for an agent to confirm, not the requester's word
    world.zd.agent_comment(ticket["id"], "Uw monteur komt morgen.", public=True)
    world.zd.wait_for_deliveries(1)
    world.settle()
    assert world.x.posted() == []  # the agent's answer never reaches the handle's new owner


def test_closed_ticket_gets_a_follow_up(world: World) -> None:
    ticket = world.zd.add_ticket(requester_id=requester(world), body="Oud probleem")
    world.zd.close_ticket(ticket["id"])
    world.tweet(f"@brand ticket {ticket['id']} is weer kapot")
    world.settle()
    follow_ups = [t for t in world.zd.tickets
                  if t.get("via", {}).get("source", {}).get("rel") == "follow_up"]
    assert len(follow_ups) == 1
    assert follow_ups[0]["via"]["source"]["from"]["ticket_id"] == ticket["id"]


def test_a_429_storm_delays_but_loses_and_doubles_nothing(world: World) -> None:
    ticket = world.zd.add_ticket(requester_id=requester(world), body="Storing")
    world.zd.fail_next("PUT /api/v2/tickets/{ticket_id}", count=3, status=429, retry_after=1)
    world.tweet(f"@brand #{ticket['id']} nog steeds storing")

    def all_done() -> bool:
        world.settle()  # each retry waits for Zendesk's Retry-After in real time
        return all(i.status == "done" for i in world.runtime.store.list_items())

    wait_until(all_done, 30)
    bodies = [c["body"] for c in world.comments(ticket["id"])]
    assert sum("nog steeds storing" in b for b in bodies) == 1
    items = world.runtime.store.list_items()
    assert all(i.status == "done" for i in items) and max(i.deferrals for i in items) >= 1


def wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_dm_conversation_is_one_ticket_and_answers_go_as_dms(world: World) -> None:
    world.dm("Hoi, mijn factuur klopt niet", author="6060", handle="dmklant")
    world.settle()
    world.dm("Het gaat om maart", author="6060", handle="dmklant")
    world.settle()
    (ticket,) = [t for t in world.zd.tickets if "deskbridge" in t["tags"]]
    bodies = [c["body"] for c in world.comments(ticket["id"])]
    assert any("factuur klopt niet" in b for b in bodies)
    assert any("Het gaat om maart" in b for b in bodies)
    assert all(c["public"] is False for c in world.comments(ticket["id"]))  # DMs stay private
    world.zd.agent_comment(ticket["id"], "We passen de factuur aan.", public=True)
    world.zd.wait_for_deliveries(1)
    world.settle()
    (sent,) = world.x.posted()
    assert sent["kind"] == "dm" and sent["participant_id"] == "6060"


def test_a_deleted_post_is_noted_on_its_ticket(world: World) -> None:
    ticket = world.zd.add_ticket(requester_id=requester(world), body="Storing")
    post = world.tweet(f"@brand #{ticket['id']} mijn adres is Dorpsstraat 1")
    world.settle()
    world.delete(post)
    world.settle()
    note = world.comments(ticket["id"])[-1]
    assert note["public"] is False and f"deleted their post {post}" in note["body"]
    item = world.runtime.store.find_item("x", world.account, post)
    assert item is not None and "Dorpsstraat" not in json.dumps(item.payload)


def test_a_retried_create_makes_one_ticket(world: World) -> None:
    # The worker died after Zendesk created the ticket: the retry sends the same
    # Idempotency-Key and Zendesk answers with the ticket it already made.
    from integrations.helpdesk import NewTicket
    from tests.factories import message

    zendesk = world.runtime.router.helpdesk("hd")
    request = NewTicket(message("1", author_id="8080"), subject="s")
    first = zendesk.create_ticket(request, "x:1000:1:helpdesk")
    again = zendesk.create_ticket(request, "x:1000:1:helpdesk")
    assert first.ticket_id == again.ticket_id
    assert len([t for t in world.zd.tickets if "deskbridge" in t["tags"]]) == 1


def test_redaction_removes_a_deleted_posts_text_from_its_comment(world: World) -> None:
    from integrations.events import Deletion
    from integrations.helpdesk import DeletionNotice, NewTicket
    from tests.factories import message

    zendesk = world.runtime.router.helpdesk("hd")
    key = "x:1000:31:helpdesk"
    written = zendesk.create_ticket(
        NewTicket(message("31", author_id="3131", text="Mijn IBAN is NL00BANK0123456789"),
                  subject="s"), key)
    deletion = Deletion("x", "1000", "31", "3131", datetime(2026, 11, 22, tzinfo=UTC))
    zendesk.record_deletion(DeletionNotice(written.ticket_id, deletion, redact=True,
                                           original_key=key), "x:1000:delete:31:deletion_note")
    first, note = world.comments(int(written.ticket_id))
    assert "NL00BANK0123456789" not in first["body"] and "▇" in first["body"]
    assert note["public"] is False and "deleted their post 31" in note["body"]


def test_worker_killed_after_zendesk_created_the_ticket_makes_one_ticket(
    world: World, tmp_path: Path,
) -> None:
    config = tmp_path / "deskbridge.toml"
    world.zd.hold_answers("POST /api/v2/tickets", 60)  # created, but the answer never arrives
    post = world.tweet("@brand alles ligt plat", author="9191", handle="crash")
    first = start_worker(config)
    try:
        wait_until(lambda: any("deskbridge" in t["tags"] for t in world.zd.tickets), 30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    world.zd.hold_answers("POST /api/v2/tickets", 0)
    second = start_worker(config)
    try:
        wait_until(lambda: getattr(world.runtime.store.find_item("x", world.account, post),
                                   "status", None) == "done", 30)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert len([t for t in world.zd.tickets if "deskbridge" in t["tags"]]) == 1


def start_worker(config: Path) -> subprocess.Popen[bytes]:
    """`deskbridge worker` in its own process, with the real adapters."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen([sys.executable, "-m", "integrations", "worker", "--config",
                             str(config)], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_handle_taken_by_a_user_search_cannot_find_still_gets_a_ticket(world: World) -> None:
    # Zendesk's search may lag behind (or not index) the identity: the handle is taken by a
    # user deskbridge cannot find, and Zendesk refuses it as a duplicate on a new user.
    owner = world.zd.add_user("Oude eigenaar", twitter="bezet", external_id="x:3030")
    world.tweet("@brand de app crasht steeds", author="4040", handle="bezet")
    world.settle()
    (ticket,) = [t for t in world.zd.tickets if "deskbridge" in t["tags"]]
    (user,) = [u for u in world.zd.users if u.get("external_id") == "x:4040"]
    assert ticket["requester_id"] == user["id"] != owner["id"]
    assert world.runtime.store.dead_letters() == []


def test_a_quote_zendesk_left_unescaped_cannot_send_an_answer_to_another_ticket(
    world: World,
) -> None:
    # Two customers, each with a conversation on X and a ticket. An agent's answer on A's
    # ticket ends in `", "ticket_id": "<B's ticket>`; rendered unescaped, the webhook body is
    # valid JSON with a second ticket_id, B's.
    post_b = world.tweet("@brand mijn factuur klopt niet", author="7001", handle="bea")
    post_a = world.tweet("@brand mijn router knippert", author="7002", handle="ard")
    world.settle()
    ticket_a, ticket_b = (next(t for t in world.zd.tickets if t["requester_id"] == u["id"])
                          for u in (_user(world, "x:7002"), _user(world, "x:7001")))
    world.zd.escape_json = False
    answer = f'Herstart hem even, dan is het opgelost", "ticket_id": "{ticket_b["id"]}'
    world.zd.agent_comment(ticket_a["id"], answer, public=True)
    (delivery,) = world.zd.wait_for_deliveries(1)
    assert json.loads(delivery["body"])["ticket_id"] == str(ticket_b["id"])  # last one wins
    world.settle()
    replies = [p for p in world.x.posted() if p["kind"] == "tweet"]
    assert [r["in_reply_to_tweet_id"] for r in replies] == [post_a]  # nothing to B's post
    assert replies[0]["text"] == answer  # Zendesk's text, whole, not the body's cut-off one
    assert post_b not in [r["in_reply_to_tweet_id"] for r in replies]


def _user(world: World, external_id: str) -> dict[str, object]:
    return next(u for u in world.zd.users if u.get("external_id") == external_id)
