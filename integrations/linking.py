"""The link decision: which ticket a message belongs to, and what to do with it (pure).

Rules are tried in DESIGN.md's order, and the first that answers wins:
1. thread — a reply to a message already on a ticket;
2. DM session — a DM in a conversation already on a ticket that is not closed and recent;
3. reference — a ticket number the message cites (see `references.py`) that exists;
4. identity — the sender is a known helpdesk user with exactly one recent open ticket;
5. new — a new ticket, if the mapping opens tickets for this kind of message; else store only.
The decision says in an agent's words which rule answered and why. It asks what it needs of a
`LinkLookup` (the store and the helpdesk behind it), in that order, and nothing more: the
decision itself does no I/O, which is what lets the rules be tested as tables.

A message whose author X did not name (a polled page with default fields only) is never
linked by who sent it: the identity rule and every requester check skip it, and a ticket
opened for it is unverified and private.

No message lands on a stranger's ticket: a reference to a ticket whose requester is not known
to be the sender becomes an internal note marked unverified (or a new ticket, if the mapping
says so), a pending identity claim is recorded, and nothing public is said about that ticket.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from integrations.events import MessageKind, SocialMessage, SocialUser
from integrations.references import ReferenceRules, extract_references

UNKNOWN_AUTHOR = "; X did not say who wrote it, so it is private and never answered"


class Action(enum.StrEnum):
    COMMENT = "comment"
    FOLLOW_UP = "follow_up"  # a new ticket that follows up a closed one
    CREATE = "create"
    STORE_ONLY = "store_only"
    IGNORE = "ignore"


class Rule(enum.StrEnum):
    THREAD = "thread"
    DM_SESSION = "dm_session"
    REFERENCE = "reference"
    IDENTITY = "identity"
    NEW = "new"
    NOT_FOR_TICKETS = "not_for_tickets"


@dataclass(frozen=True)
class LinkRules:
    """What a mapping says about linking."""

    open_tickets_for: frozenset[MessageKind] = frozenset(
        {MessageKind.MENTION, MessageKind.REPLY, MessageKind.QUOTE, MessageKind.DM}
    )
    include_retweets: bool = False
    unverified_reference: str = "internal_note"  # or "new_ticket"
    dm_public: bool = False  # may a DM become a public comment?
    session_window: timedelta = timedelta(days=14)
    references: ReferenceRules = field(default_factory=ReferenceRules)


@dataclass(frozen=True)
class TicketFacts:
    """A ticket as the helpdesk has it now, with what is known of its requester."""

    id: str
    is_closed: bool
    requester_id: str | None
    updated_at: datetime | None = None
    requester_social_ids: frozenset[str] = frozenset()  # X user ids known for the requester
    requester_handles: frozenset[str] = frozenset()  # lower-case handles of their identities


@dataclass(frozen=True)
class ThreadParent:
    """The ticket the message's parent is already on."""

    message_id: str
    ticket_id: str
    public: bool
    verified: bool


@dataclass(frozen=True)
class Sender:
    """Who the sender is in the helpdesk, if known: verified, or only claimed (pending)."""

    helpdesk_user_id: str
    verified: bool


class LinkLookup(Protocol):
    """What the decision may ask of the store and the helpdesk."""

    def thread_parent(self, message: SocialMessage) -> ThreadParent | None: ...

    def dm_session_ticket(self, message: SocialMessage) -> TicketFacts | None:
        """The ticket the DM conversation was last linked to, read fresh."""
        ...

    def ticket(self, number: str) -> TicketFacts | None:
        """The ticket a customer cites, read fresh; None if there is no such ticket."""
        ...

    def sender(self, author: SocialUser) -> Sender | None: ...

    def open_tickets(self, helpdesk_user_id: str) -> Sequence[TicketFacts]:
        """The user's tickets that are not closed."""
        ...


@dataclass(frozen=True)
class PendingClaim:
    """The sender claims the requester's ticket; an agent confirms or not."""

    ticket_id: str
    requester_id: str | None


@dataclass(frozen=True)
class LinkDecision:
    """Where a message goes and why. `ticket_id` is the ticket to comment on, or the closed
    ticket a follow-up points at; None for create, store-only and ignore."""

    action: Action
    rule: Rule
    reason: str
    ticket_id: str | None = None
    verified: bool = False
    public: bool = False
    claim: PendingClaim | None = None
    cited: tuple[str, ...] = ()


def decide(message: SocialMessage, lookup: LinkLookup, rules: LinkRules,
           now: datetime) -> LinkDecision:
    """Decide where `message` belongs, asking `lookup` only what each rule needs."""
    ignored = _ignore_reason(message, rules)
    if ignored is not None:
        return LinkDecision(Action.IGNORE, Rule.NOT_FOR_TICKETS, ignored)
    cited = tuple(r.number for r in extract_references(
        message.text, rules.references, message.expanded_urls))
    public = message.kind != MessageKind.DM or rules.dm_public
    return (_by_thread(message, lookup, cited, public)
            or _by_dm_session(message, lookup, rules, now, cited)
            or _by_reference(message, lookup, rules, cited, public)
            or _by_identity(message, lookup, rules, now, cited, public)
            or _new(message, rules, cited, public))


def _ignore_reason(message: SocialMessage, rules: LinkRules) -> str | None:
    if message.is_own:
        return "sent by the account itself"
    if message.kind == MessageKind.RETWEET and not rules.include_retweets:
        return "a retweet, and this mapping ignores retweets"
    if message.kind in (MessageKind.UNKNOWN, MessageKind.DELETE):
        return f"not a message a ticket can take ({message.kind.value})"
    return None


def _by_thread(message: SocialMessage, lookup: LinkLookup, cited: tuple[str, ...],
               public: bool) -> LinkDecision | None:
    parent = lookup.thread_parent(message) if message.in_reply_to_id else None
    if parent is None:
        return None
    others = [n for n in cited if n != parent.ticket_id]
    reason = f"reply to message {parent.message_id}, already on this ticket"
    if others:
        reason += f"; it also cites ticket {_names(others)}, but stays in its thread"
    # The thread says which ticket, not who wrote this: an unknown author is not its requester.
    verified = parent.verified and message.author.is_known
    if not message.author.is_known:
        reason += UNKNOWN_AUTHOR
    return LinkDecision(Action.COMMENT, Rule.THREAD, reason, parent.ticket_id,
                        verified=verified, public=public and parent.public and verified,
                        cited=cited)


def _by_dm_session(message: SocialMessage, lookup: LinkLookup, rules: LinkRules,
                   now: datetime, cited: tuple[str, ...]) -> LinkDecision | None:
    if message.kind != MessageKind.DM:
        return None
    ticket = lookup.dm_session_ticket(message)
    if ticket is None or not _is_current(ticket, rules, now):
        return None
    sender = lookup.sender(message.author) if message.author.is_known else None
    verified = _is_requester(ticket, message.author, sender)
    return LinkDecision(Action.COMMENT, Rule.DM_SESSION,
                        "direct message in a conversation already on this ticket",
                        ticket.id, verified=verified, public=rules.dm_public and verified,
                        cited=cited)


# Each cited number costs a helpdesk call, out of the account's budget that every app shares:
# a post of 4,000 `#N` (any X user can write one) once held the account at its limit for
# hours. A customer cites one or two; past this many, the rest are named but not looked up.
MAX_CITED_LOOKUPS = 5


def _by_reference(message: SocialMessage, lookup: LinkLookup, rules: LinkRules,
                  cited: tuple[str, ...], public: bool) -> LinkDecision | None:
    if not cited:
        return None
    asked = cited[:MAX_CITED_LOOKUPS]
    existing = [t for t in (lookup.ticket(n) for n in asked) if t is not None]
    missing = [n for n in asked if n not in {t.id for t in existing}]
    # The ticket itself may say who its requester is on X; ask about the sender only if not.
    verified = [t for t in existing if _is_requester(t, message.author, None)]
    if not verified and existing and message.author.is_known:
        sender = lookup.sender(message.author)
        verified = [t for t in existing if _is_requester(t, message.author, sender)]
    if verified:
        return _cited_ticket(verified[0], cited, missing, public)
    if existing:
        return _unverified_claim(existing[0], rules, cited, missing)
    return None


def _cited_ticket(ticket: TicketFacts, cited: tuple[str, ...], missing: list[str],
                  public: bool) -> LinkDecision:
    reason = f"cites ticket {ticket.id}, and the sender is its requester"
    reason += _also(cited, ticket.id, missing)
    if ticket.is_closed:
        return LinkDecision(Action.FOLLOW_UP, Rule.REFERENCE,
                            reason + "; the ticket is closed, so a follow-up is opened",
                            ticket.id, verified=True, public=public, cited=cited)
    return LinkDecision(Action.COMMENT, Rule.REFERENCE, reason, ticket.id, verified=True,
                        public=public, cited=cited)


def _unverified_claim(ticket: TicketFacts, rules: LinkRules, cited: tuple[str, ...],
                      missing: list[str]) -> LinkDecision:
    claim = PendingClaim(ticket.id, ticket.requester_id)
    reason = (f"UNVERIFIED: cites ticket {ticket.id}, but the sender is not known to be its "
              "requester; an agent must confirm before anything is shared")
    reason += _also(cited, ticket.id, missing)
    if ticket.is_closed or rules.unverified_reference == "new_ticket":
        return LinkDecision(Action.CREATE, Rule.REFERENCE,
                            reason + "; opened as a new ticket", None, verified=False,
                            public=False, claim=claim, cited=cited)
    return LinkDecision(Action.COMMENT, Rule.REFERENCE, reason, ticket.id, verified=False,
                        public=False, claim=claim, cited=cited)


def _by_identity(message: SocialMessage, lookup: LinkLookup, rules: LinkRules, now: datetime,
                 cited: tuple[str, ...], public: bool) -> LinkDecision | None:
    if not message.author.is_known:
        return None
    sender = lookup.sender(message.author)
    if sender is None or not sender.verified:
        return None
    recent = [t for t in lookup.open_tickets(sender.helpdesk_user_id)
              if _is_current(t, rules, now)]
    if len(recent) != 1:
        return None
    reason = "the sender is a known customer with exactly one recent open ticket"
    reason += _also(cited, recent[0].id, [n for n in cited if n != recent[0].id])
    return LinkDecision(Action.COMMENT, Rule.IDENTITY, reason, recent[0].id, verified=True,
                        public=public, cited=cited)


def _new(message: SocialMessage, rules: LinkRules, cited: tuple[str, ...],
         public: bool) -> LinkDecision:
    if message.kind not in rules.open_tickets_for:
        return LinkDecision(Action.STORE_ONLY, Rule.NOT_FOR_TICKETS,
                            f"this mapping opens no tickets for a {message.kind.value}",
                            cited=cited)
    reason = "no existing ticket found for this conversation"
    if cited:
        asked, unasked = cited[:MAX_CITED_LOOKUPS], cited[MAX_CITED_LOOKUPS:]
        reason += f"; it cites ticket {_names(list(asked))}, which does not exist"
        if unasked:
            reason += f"; {len(unasked)} more numbers it cites were not looked up"
    if not message.author.is_known:
        return LinkDecision(Action.CREATE, Rule.NEW, reason + UNKNOWN_AUTHOR, verified=False,
                            public=False, cited=cited)
    return LinkDecision(Action.CREATE, Rule.NEW, reason, verified=True, public=public,
                        cited=cited)


def _is_current(ticket: TicketFacts, rules: LinkRules, now: datetime) -> bool:
    recent = ticket.updated_at is None or now - ticket.updated_at <= rules.session_window
    return not ticket.is_closed and recent


def _is_requester(ticket: TicketFacts, author: SocialUser, sender: Sender | None) -> bool:
    if not author.is_known:
        return False
    if author.user_id in ticket.requester_social_ids:
        return True
    if author.handle and author.handle.lower() in ticket.requester_handles:
        return True
    return bool(sender and sender.verified and sender.helpdesk_user_id == ticket.requester_id)


def _also(cited: tuple[str, ...], chosen: str, missing: list[str]) -> str:
    asked, unasked = cited[:MAX_CITED_LOOKUPS], cited[MAX_CITED_LOOKUPS:]
    others = [n for n in asked if n != chosen and n not in missing]
    text = f"; it also cites ticket {_names(others)}" if others else ""
    text += f"; ticket {_names(missing)} does not exist" if missing else ""
    if unasked:
        text += f"; {len(unasked)} more numbers it cites were not looked up"
    return text


def _names(numbers: list[str]) -> str:
    # A reason is read by an agent and kept on the ticket: a post can cite thousands.
    if len(numbers) <= MAX_CITED_LOOKUPS:
        return ", ".join(numbers)
    return f"{', '.join(numbers[:MAX_CITED_LOOKUPS])} and {len(numbers) - MAX_CITED_LOOKUPS} more"
