"""The link decision: which ticket a message belongs to, and what to do with it (pure).

DESIGN.md's order is thread, DM session, reference, identity, new ticket; the first rule that
answers wins and the decision says, in an agent's words, which rule answered and why.
This module decides over facts gathered beforehand (`LinkFacts`); it does no I/O.

Implemented so far: ignore (own messages, retweets, unknown kinds), thread, new ticket and
store-only. DM session, reference and identity arrive with the linking issue.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from integrations.events import MessageKind, SocialMessage


class Action(enum.StrEnum):
    COMMENT = "comment"
    FOLLOW_UP = "follow_up"
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
    """What a mapping says about opening tickets."""

    open_tickets_for: frozenset[MessageKind] = frozenset(
        {MessageKind.MENTION, MessageKind.REPLY, MessageKind.QUOTE, MessageKind.DM}
    )
    include_retweets: bool = False


@dataclass(frozen=True)
class ThreadParent:
    """The ticket the message's parent is already on."""

    message_id: str
    ticket_id: str
    public: bool
    verified: bool


@dataclass(frozen=True)
class LinkFacts:
    """What the store and the helpdesk know that bears on one message."""

    thread_parent: ThreadParent | None = None


@dataclass(frozen=True)
class LinkDecision:
    """Where a message goes and why; `ticket_id` is None for create, store-only and ignore."""

    action: Action
    rule: Rule
    reason: str
    ticket_id: str | None = None
    verified: bool = False
    public: bool = False


def decide(message: SocialMessage, facts: LinkFacts, rules: LinkRules) -> LinkDecision:
    """Decide where `message` belongs, given what is known about it."""
    ignored = _ignore_reason(message, rules)
    if ignored is not None:
        return LinkDecision(Action.IGNORE, Rule.NOT_FOR_TICKETS, ignored)
    parent = facts.thread_parent
    if parent is not None:
        return LinkDecision(
            Action.COMMENT, Rule.THREAD,
            f"reply to message {parent.message_id}, already on this ticket",
            ticket_id=parent.ticket_id, verified=parent.verified,
            public=parent.public and message.kind != MessageKind.DM,
        )
    if message.kind not in rules.open_tickets_for:
        return LinkDecision(
            Action.STORE_ONLY, Rule.NOT_FOR_TICKETS,
            f"this mapping opens no tickets for a {message.kind.value}",
        )
    return LinkDecision(
        Action.CREATE, Rule.NEW, "no existing ticket found for this conversation",
        verified=True, public=message.kind != MessageKind.DM,
    )


def _ignore_reason(message: SocialMessage, rules: LinkRules) -> str | None:
    if message.is_own:
        return "sent by the account itself"
    if message.kind == MessageKind.RETWEET and not rules.include_retweets:
        return "a retweet, and this mapping ignores retweets"
    if message.kind in (MessageKind.UNKNOWN, MessageKind.DELETE):
        return f"not a message a ticket can take ({message.kind.value})"
    return None
