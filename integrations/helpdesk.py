"""The helpdesk interface of DESIGN.md: what the pipeline asks of Zendesk or Salesforce.

An adapter converts these intents into the provider's API calls and nothing more. Every
write carries an idempotency key derived from the message; `find_write` answers whether a
write with that key already happened, so a retry after an unknown outcome never writes twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from integrations.events import Deletion, SocialMessage, SocialUser


@dataclass(frozen=True)
class Ticket:
    """A helpdesk ticket (Zendesk) or case (Salesforce), as far as linking needs it."""

    id: str
    status: str  # the provider's status, lower-case ("new", "open", "solved", "closed", ...)
    requester_id: str | None
    updated_at: datetime | None = None
    is_closed: bool = False
    requester_social_ids: tuple[str, ...] = ()  # X user ids the helpdesk knows for the requester
    # Handles of the requester's X identities, for an adapter that reads them with the
    # ticket (the Zendesk adapter finds a sender by handle in `find_user` instead).
    requester_handles: tuple[str, ...] = ()


@dataclass(frozen=True)
class HelpdeskUser:
    id: str
    name: str = ""


# The author roles whose comments are the company speaking (Zendesk's user roles:
# https://developer.zendesk.com/api-reference/ticketing/users/users/#json-format).
STAFF_ROLES = frozenset({"agent", "admin"})


@dataclass(frozen=True)
class HelpdeskComment:
    """A comment as the helpdesk's API has it, read back before an answer goes out: a
    webhook only says that a comment exists, this says what it is."""

    id: str
    ticket_id: str
    body: str  # the text as the agent wrote it (plain text)
    public: bool
    author_id: str | None
    author_role: str = ""  # "end-user", "agent", "admin"; "" when the helpdesk did not say

    @property
    def is_by_staff(self) -> bool:
        """Return whether an agent or admin wrote it (an unknown author is not staff)."""
        return self.author_role in STAFF_ROLES


@dataclass(frozen=True)
class NewTicket:
    """What the pipeline asks to open: the message becomes the first comment."""

    message: SocialMessage
    subject: str
    tags: tuple[str, ...] = ()
    follow_up_of: str | None = None  # a closed ticket this one follows up
    verified: bool = True  # False: the sender claims a ticket it is not known to own
    reason: str = ""
    requester_id: str | None = None  # the helpdesk user known to be the sender, if any
    public: bool = True  # False for a DM: the first comment stays private
    group_id: int | None = None
    brand_id: int | None = None
    priority: str | None = None


@dataclass(frozen=True)
class NewComment:
    """A message to add to an existing ticket, public or as an internal note."""

    ticket_id: str
    message: SocialMessage
    public: bool
    verified: bool
    reason: str
    author_id: str | None = None  # the helpdesk user who is the sender (public comments)


@dataclass(frozen=True)
class DeletionNotice:
    """The customer deleted a message that is on a ticket: say so, and redact if asked."""

    ticket_id: str
    deletion: Deletion
    redact: bool = False  # also remove the copied text from the comment that holds it
    original_key: str | None = None  # the idempotency key the deleted post was written with


@dataclass(frozen=True)
class WriteResult:
    """What a write produced: the ticket it touched and the provider's id of the new thing
    (and, for a new ticket, the requester it was opened for)."""

    ticket_id: str
    provider_id: str
    requester_id: str | None = None


class Helpdesk(Protocol):
    """One configured helpdesk (a Zendesk subdomain, a Salesforce org)."""

    name: str

    def get_ticket(self, ticket_id: str) -> Ticket | None:
        """The ticket read fresh, or None if it does not exist."""
        ...

    def get_comment(self, ticket_id: str, comment_id: str) -> HelpdeskComment | None:
        """The comment read fresh, or None if that ticket has no comment with that id."""
        ...

    def find_user(self, author: SocialUser) -> HelpdeskUser | None:
        """The helpdesk user known to be this social user, if any."""
        ...

    def open_tickets(self, user_id: str) -> list[Ticket]:
        """The user's tickets that are not closed, read fresh."""
        ...

    def create_ticket(self, request: NewTicket, idempotency_key: str) -> WriteResult:
        """Open a ticket with the message as its first comment."""
        ...

    def add_comment(self, request: NewComment, idempotency_key: str) -> WriteResult:
        """Add the message to an existing ticket."""
        ...

    def record_deletion(self, request: DeletionNotice, idempotency_key: str) -> WriteResult:
        """Note on the ticket that the customer deleted the message (redacting if asked)."""
        ...

    def find_write(self, idempotency_key: str, ticket_id: str | None = None) -> WriteResult | None:
        """The earlier write made with this key, if it happened (after an unknown outcome);
        `ticket_id` is the ticket it was made on, when it was a comment."""
        ...
