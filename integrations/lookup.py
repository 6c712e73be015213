"""What the link decision may ask, answered from the store and the helpdesk.

Each answer is fetched only when a rule asks for it, and a ticket is read once per decision:
the helpdesk's API budget is spent on what the decision actually needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from integrations.events import SocialMessage, SocialUser
from integrations.helpdesk import HelpdeskUser, Ticket
from integrations.linking import Sender, ThreadParent, TicketFacts
from integrations.store import Store


class HelpdeskReader(Protocol):
    """The read side of a helpdesk: all that linking needs."""

    name: str

    def get_ticket(self, ticket_id: str) -> Ticket | None: ...

    def find_user(self, author: SocialUser) -> HelpdeskUser | None: ...

    def open_tickets(self, user_id: str) -> list[Ticket]: ...


def ticket_facts(ticket: Ticket) -> TicketFacts:
    return TicketFacts(
        id=ticket.id, is_closed=ticket.is_closed, requester_id=ticket.requester_id,
        updated_at=ticket.updated_at, requester_social_ids=frozenset(ticket.requester_social_ids),
        requester_handles=frozenset(h.lower() for h in ticket.requester_handles),
    )


class StoreHelpdeskLookup:
    """The `LinkLookup` of one message: the store for links and identities, the helpdesk for
    tickets and users."""

    def __init__(self, store: Store, helpdesk: HelpdeskReader) -> None:
        self.store, self.helpdesk = store, helpdesk
        self._tickets: dict[str, TicketFacts | None] = {}
        self._senders: dict[str, Sender | None] = {}

    def thread_parent(self, message: SocialMessage) -> ThreadParent | None:
        if not message.in_reply_to_id:
            return None
        link = self.store.link_for_message(message.channel, message.account,
                                           message.in_reply_to_id)
        if link is None or link.helpdesk != self.helpdesk.name:
            return None
        return ThreadParent(link.message_id, link.ticket_id, link.public, link.verified)

    def dm_session_ticket(self, message: SocialMessage) -> TicketFacts | None:
        if not message.conversation_id:
            return None
        link = self.store.latest_link_in_conversation(
            message.channel, message.account, message.conversation_id, self.helpdesk.name)
        return self.ticket(link.ticket_id) if link else None

    def ticket(self, number: str) -> TicketFacts | None:
        if number not in self._tickets:  # read once per decision
            found = self.helpdesk.get_ticket(number)
            self._tickets[number] = ticket_facts(found) if found else None
        return self._tickets[number]

    def known_ticket(self, number: str) -> TicketFacts | None:
        """A ticket this decision already read (never a new request)."""
        return self._tickets.get(number)

    def sender(self, author: SocialUser) -> Sender | None:
        if author.user_id not in self._senders:
            self._senders[author.user_id] = self._find_sender(author)
        return self._senders[author.user_id]

    def _find_sender(self, author: SocialUser) -> Sender | None:
        known = [i for i in self.store.identities_for(author.channel, author.user_id)
                 if i.helpdesk == self.helpdesk.name]
        verified = [i for i in known if i.status == "verified"]
        if verified:
            return Sender(verified[0].helpdesk_user_id, verified=True)
        user = self.helpdesk.find_user(author)
        if user is not None:  # the helpdesk itself knows this X account as the user
            return Sender(user.id, verified=True)
        return Sender(known[0].helpdesk_user_id, verified=False) if known else None

    def open_tickets(self, helpdesk_user_id: str) -> Sequence[TicketFacts]:
        return [ticket_facts(t) for t in self.helpdesk.open_tickets(helpdesk_user_id)]
