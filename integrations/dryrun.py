"""`deskbridge link`: the link decision for a message an admin types, without writing anything.

The store is read for threads, DM sessions and identities, and the helpdesk for tickets and
users, exactly as for a real message; nothing is written anywhere. When the mapping's
helpdesk cannot be asked (no adapter in this version), the decision is shown as if no ticket
existed, and the output says so.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from integrations.errors import ConfigurationError
from integrations.events import MessageKind, SocialMessage, SocialUser
from integrations.helpdesk import HelpdeskUser, Ticket
from integrations.linking import decide
from integrations.lookup import HelpdeskReader, StoreHelpdeskLookup
from integrations.references import extract_references
from integrations.runtime import Runtime


class _NoHelpdesk:
    """Answers "unknown" to every helpdesk question (when no adapter can be built)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get_ticket(self, ticket_id: str) -> Ticket | None:
        return None

    def find_user(self, author: SocialUser) -> HelpdeskUser | None:
        return None

    def open_tickets(self, user_id: str) -> list[Ticket]:
        return []


def dry_run_link(runtime: Runtime, mapping_name: str, text: str, *, reply_to: str | None,
                 dm: bool, sender: str) -> Iterator[str]:
    """The decision for `text`, as lines for a person. Raises ConfigurationError for an
    unknown mapping."""
    settings = runtime.settings
    mapping = next((m for m in settings.mappings if m.name == mapping_name), None)
    if mapping is None:
        names = ", ".join(m.name for m in settings.mappings) or "none"
        raise ConfigurationError(f"no mapping {mapping_name!r} (configured: {names})")
    channel = settings.channels[mapping.channel]
    rules = runtime.router.rules_for(mapping)
    message = _message(channel.type, channel.account_id, text, reply_to, dm, sender)
    helpdesk: HelpdeskReader
    try:
        helpdesk, notice = runtime.router.helpdesk(mapping.helpdesk), ""
    except ConfigurationError as err:
        helpdesk, notice = _NoHelpdesk(mapping.helpdesk), f"note: {err}; tickets shown as unknown"
    decision = decide(message, StoreHelpdeskLookup(runtime.store, helpdesk), rules,
                      datetime.now(UTC))
    refs = extract_references(text, rules.references)
    yield from _describe(decision.action.value, decision.rule.value, decision.ticket_id,
                         decision.verified, decision.public, decision.reason,
                         [r.number for r in refs])
    if notice:
        yield notice


def _message(kind: str, account: str, text: str, reply_to: str | None, dm: bool,
             sender: str) -> SocialMessage:
    handle, _, user_id = sender.lstrip("@").partition(":")
    message_kind = MessageKind.DM if dm else MessageKind.REPLY if reply_to else MessageKind.MENTION
    return SocialMessage(
        channel=kind, account=account, message_id="dry-run", kind=message_kind,
        author=SocialUser(kind, user_id or f"handle:{handle}", handle), text=text,
        created_at=datetime.now(UTC), in_reply_to_id=reply_to, conversation_id=reply_to)


def _describe(action: str, rule: str, ticket: str | None, verified: bool, public: bool,
              reason: str, refs: Sequence[str]) -> Iterator[str]:
    yield f"action:     {action}"
    yield f"rule:       {rule}"
    yield f"ticket:     {ticket or '-'}"
    yield f"verified:   {'yes' if verified else 'no'}"
    yield f"visibility: {'public' if public else 'internal'}"
    yield f"references: {', '.join(refs) or '-'}"
    yield f"reason:     {reason}"
