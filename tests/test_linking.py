"""The link decision, rule by rule, as tables over an in-memory lookup (hand-written facts)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from integrations.events import MessageKind, SocialMessage, SocialUser
from integrations.linking import (
    MAX_CITED_LOOKUPS,
    Action,
    LinkDecision,
    LinkRules,
    PendingClaim,
    Rule,
    Sender,
    ThreadParent,
    TicketFacts,
    decide,
)
from tests.factories import message

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
RECENT = NOW - timedelta(days=2)
OLD = NOW - timedelta(days=30)
CUSTOMER = "42"  # the sender in tests.factories.message


def ticket(id: str, *, closed: bool = False, requester: str | None = "u-42",
           social: Sequence[str] = (CUSTOMER,), updated: datetime = RECENT) -> TicketFacts:
    return TicketFacts(id, closed, requester, updated, frozenset(social))


STRANGERS = ticket("500", requester="u-7", social=("7",))


@dataclass
class Lookup:
    """An in-memory LinkLookup (a test stand-in for the store and the helpdesk)."""

    parents: dict[str, ThreadParent] = field(default_factory=dict)
    session: TicketFacts | None = None
    tickets: dict[str, TicketFacts] = field(default_factory=dict)
    known_sender: Sender | None = None
    open: list[TicketFacts] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def thread_parent(self, m: SocialMessage) -> ThreadParent | None:
        self.asked.append("thread")
        return self.parents.get(m.in_reply_to_id or "")

    def dm_session_ticket(self, m: SocialMessage) -> TicketFacts | None:
        self.asked.append("session")
        return self.session

    def ticket(self, number: str) -> TicketFacts | None:
        self.asked.append(f"ticket {number}")
        return self.tickets.get(number)

    def sender(self, author: SocialUser) -> Sender | None:
        return self.known_sender

    def open_tickets(self, user_id: str) -> Sequence[TicketFacts]:
        self.asked.append("open tickets")
        return self.open


def run(m: SocialMessage, lookup: Lookup | None = None, **rules: object) -> LinkDecision:
    return decide(m, lookup or Lookup(), LinkRules(**rules), NOW)  # type: ignore[arg-type]


def dm(text: str = "hallo", **kw: object) -> SocialMessage:
    return message(kind=MessageKind.DM, text=text, **kw)  # type: ignore[arg-type]


PARENT = ThreadParent("10", "100", public=True, verified=True)

# (case, message, lookup, rules, expected action, rule, ticket, verified, public)
TABLE = [
    ("own message", message(is_own=True), Lookup(), {},
     Action.IGNORE, Rule.NOT_FOR_TICKETS, None, False, False),
    ("retweet ignored", message(kind=MessageKind.RETWEET), Lookup(), {},
     Action.IGNORE, Rule.NOT_FOR_TICKETS, None, False, False),
    ("retweet when the mapping asks", message(kind=MessageKind.RETWEET), Lookup(),
     {"include_retweets": True, "open_tickets_for": frozenset(MessageKind)},
     Action.CREATE, Rule.NEW, None, True, True),
    ("reply in a linked thread", message(kind=MessageKind.REPLY, in_reply_to_id="10"),
     Lookup(parents={"10": PARENT}), {}, Action.COMMENT, Rule.THREAD, "100", True, True),
    ("reply in thread citing another ticket stays",
     message(kind=MessageKind.REPLY, in_reply_to_id="10", text="zie ook ticket 48213"),
     Lookup(parents={"10": PARENT}, tickets={"48213": ticket("48213")}), {},
     Action.COMMENT, Rule.THREAD, "100", True, True),
    ("DM session on an open ticket", dm(), Lookup(session=ticket("200")), {},
     Action.COMMENT, Rule.DM_SESSION, "200", True, False),
    ("DM session may be public when the mapping says", dm(), Lookup(session=ticket("200")),
     {"dm_public": True}, Action.COMMENT, Rule.DM_SESSION, "200", True, True),
    ("DM session on a closed ticket is not used", dm(),
     Lookup(session=ticket("200", closed=True)), {}, Action.CREATE, Rule.NEW, None, True, False),
    ("DM session older than the window is not used", dm(),
     Lookup(session=ticket("200", updated=OLD)), {}, Action.CREATE, Rule.NEW, None, True, False),
    ("reference by its requester", message(text="Ticket 48213 is nog open"),
     Lookup(tickets={"48213": ticket("48213")}), {},
     Action.COMMENT, Rule.REFERENCE, "48213", True, True),
    ("reference in a DM stays private", dm("zaaknummer 48213"),
     Lookup(tickets={"48213": ticket("48213")}), {},
     Action.COMMENT, Rule.REFERENCE, "48213", True, False),
    ("reference to a closed ticket: follow-up", message(text="#48213 weer kapot"),
     Lookup(tickets={"48213": ticket("48213", closed=True)}), {},
     Action.FOLLOW_UP, Rule.REFERENCE, "48213", True, True),
    ("stranger's ticket: internal unverified note", message(text="ticket 500 graag"),
     Lookup(tickets={"500": STRANGERS}), {},
     Action.COMMENT, Rule.REFERENCE, "500", False, False),
    ("stranger's ticket: new ticket when the mapping says", message(text="ticket 500 graag"),
     Lookup(tickets={"500": STRANGERS}), {"unverified_reference": "new_ticket"},
     Action.CREATE, Rule.REFERENCE, None, False, False),
    ("stranger's closed ticket: new ticket, never a note on it", message(text="ticket 500"),
     Lookup(tickets={"500": ticket("500", closed=True, requester="u-7", social=("7",))}), {},
     Action.CREATE, Rule.REFERENCE, None, False, False),
    ("verified sender by confirmed identity", message(text="ticket 500"),
     Lookup(tickets={"500": STRANGERS}, known_sender=Sender("u-7", verified=True)), {},
     Action.COMMENT, Rule.REFERENCE, "500", True, True),
    ("pending identity does not verify", message(text="ticket 500"),
     Lookup(tickets={"500": STRANGERS}, known_sender=Sender("u-7", verified=False)), {},
     Action.COMMENT, Rule.REFERENCE, "500", False, False),
    ("first reference that exists and verifies wins",
     message(text="tickets 111, 500 en 48213"),
     Lookup(tickets={"500": STRANGERS, "48213": ticket("48213")}), {},
     Action.COMMENT, Rule.REFERENCE, "48213", True, True),
    ("reference to a ticket that does not exist falls through", message(text="ticket 999999"),
     Lookup(), {}, Action.CREATE, Rule.NEW, None, True, True),
    ("identity: one recent open ticket", message(text="nog steeds kapot"),
     Lookup(known_sender=Sender("u-42", True), open=[ticket("300")]), {},
     Action.COMMENT, Rule.IDENTITY, "300", True, True),
    ("identity: two open tickets is ambiguous", message(text="nog steeds kapot"),
     Lookup(known_sender=Sender("u-42", True), open=[ticket("300"), ticket("301")]), {},
     Action.CREATE, Rule.NEW, None, True, True),
    ("identity: only stale tickets", message(text="nog steeds kapot"),
     Lookup(known_sender=Sender("u-42", True), open=[ticket("300", updated=OLD)]), {},
     Action.CREATE, Rule.NEW, None, True, True),
    ("identity: a pending claim is not an identity", message(text="nog steeds kapot"),
     Lookup(known_sender=Sender("u-42", False), open=[ticket("300")]), {},
     Action.CREATE, Rule.NEW, None, True, True),
    ("new ticket for a DM is private", dm(), Lookup(), {},
     Action.CREATE, Rule.NEW, None, True, False),
    ("store only when the mapping opens no tickets for the kind", dm(), Lookup(),
     {"open_tickets_for": frozenset({MessageKind.MENTION})},
     Action.STORE_ONLY, Rule.NOT_FOR_TICKETS, None, False, False),
]


@pytest.mark.parametrize(("case", "m", "lookup", "rules", "action", "rule", "ticket_id",
                          "verified", "public"), TABLE, ids=[row[0] for row in TABLE])
def test_decision_table(case: str, m: SocialMessage, lookup: Lookup, rules: dict[str, object],
                        action: Action, rule: Rule, ticket_id: str | None, verified: bool,
                        public: bool) -> None:
    d = run(m, lookup, **rules)
    assert (d.action, d.rule, d.ticket_id, d.verified, d.public) == (
        action, rule, ticket_id, verified, public), d.reason


def test_unverified_claim_is_recorded_and_says_so() -> None:
    d = run(message(text="ticket 500 graag"), Lookup(tickets={"500": STRANGERS}))
    assert d.claim == PendingClaim("500", "u-7")
    assert d.reason.startswith("UNVERIFIED") and "confirm" in d.reason


def test_reasons_name_the_other_and_missing_tickets() -> None:
    d = run(message(text="tickets 111, 500 en 48213"),
            Lookup(tickets={"500": STRANGERS, "48213": ticket("48213")}))
    assert "also cites ticket 500" in d.reason and "ticket 111 does not exist" in d.reason
    thread = run(message(kind=MessageKind.REPLY, in_reply_to_id="10", text="zie ticket 48213"),
                 Lookup(parents={"10": PARENT}))
    assert "cites ticket 48213, but stays in its thread" in thread.reason


def test_rules_are_asked_in_order_and_no_more_than_needed() -> None:
    lookup = Lookup(parents={"10": PARENT})
    run(message(kind=MessageKind.REPLY, in_reply_to_id="10", text="ticket 48213"), lookup)
    assert lookup.asked == ["thread"]  # the thread answered: no ticket was read
    lookup = Lookup(tickets={"48213": ticket("48213")})
    run(message(text="ticket 48213"), lookup)
    assert lookup.asked == ["ticket 48213"]


def test_a_post_citing_thousands_of_numbers_costs_only_a_few_lookups() -> None:
    """Any X user can post 4,000 `#N` in one long post: each looked-up number is a call
    out of the helpdesk account's shared budget."""
    text = "@acme " + " ".join(f"#{n}" for n in range(1000, 5000))
    lookup = Lookup(tickets={"1002": ticket("1002"), "4999": ticket("4999")})
    d = run(message(text=text), lookup)
    assert lookup.asked == [f"ticket {n}" for n in range(1000, 1000 + MAX_CITED_LOOKUPS)]
    assert (d.rule, d.ticket_id) == (Rule.REFERENCE, "1002")
    assert f"{4000 - MAX_CITED_LOOKUPS} more numbers it cites were not looked up" in d.reason
    assert len(d.reason) < 300  # the agent reads it on the ticket
    none_exist = run(message(text=text), Lookup())
    assert (none_exist.rule, len(none_exist.reason) < 300) == (Rule.NEW, True)
    assert "ticket 1000, 1001, 1002, 1003, 1004, which does not exist" in none_exist.reason
    thread = run(message(kind=MessageKind.REPLY, in_reply_to_id="10", text=text),
                 Lookup(parents={"10": PARENT}))
    assert "and 3995 more, but stays in its thread" in thread.reason


def test_handle_matches_a_requester_identity() -> None:
    by_handle = TicketFacts("600", False, "u-9", RECENT, frozenset(), frozenset({"user42"}))
    d = run(message(text="ticket 600"), Lookup(tickets={"600": by_handle}))
    assert d.verified and d.action == Action.COMMENT


# ---------------------------------------------------------------- an author X did not name


def unknown_author(**kw: object) -> SocialMessage:
    """A message as a default-fields page gives it: no author_id (hand-built from the factory)."""
    return dataclasses.replace(message(**kw), author=SocialUser("x", "", ""))  # type: ignore[arg-type]


def test_an_unknown_author_is_never_linked_by_identity() -> None:
    # Every helpdesk user would match an author with no id if the lookup were asked.
    lookup = Lookup(known_sender=Sender("u-42", verified=True), open=[ticket("300")])
    decision = run(unknown_author(), lookup)
    assert (decision.action, decision.rule, decision.ticket_id) == (Action.CREATE, Rule.NEW, None)
    assert not decision.verified and not decision.public
    assert "open tickets" not in lookup.asked


def test_an_unknown_author_citing_a_ticket_is_an_unverified_claim() -> None:
    # The ticket's requester is listed with an empty X id: an empty author id is no match.
    lookup = Lookup(tickets={"48213": ticket("48213", social=("",))},
                    known_sender=Sender("u-42", verified=True))
    decision = run(unknown_author(text="Ticket 48213 is nog open"), lookup)
    assert (decision.rule, decision.ticket_id, decision.verified) == (
        Rule.REFERENCE, "48213", False)
    assert not decision.public and decision.claim is not None


def test_an_unknown_author_in_a_dm_session_is_not_verified() -> None:
    lookup = Lookup(session=ticket("200", social=("",)),
                    known_sender=Sender("u-42", verified=True))
    decision = run(dataclasses.replace(unknown_author(), kind=MessageKind.DM), lookup,
                   dm_public=True)
    assert (decision.rule, decision.ticket_id) == (Rule.DM_SESSION, "200")
    assert not decision.verified and not decision.public


def test_an_unknown_author_in_a_linked_thread_is_noted_but_not_verified() -> None:
    decision = run(unknown_author(kind=MessageKind.REPLY, in_reply_to_id="10"),
                   Lookup(parents={"10": PARENT}))
    assert (decision.action, decision.rule, decision.ticket_id) == (
        Action.COMMENT, Rule.THREAD, "100")
    assert not decision.verified and not decision.public
