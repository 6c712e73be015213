"""accept → process → write → record: the road of every item, with retries and dead letters.

`Pipeline.accept` is the only thing a webhook view calls: it stores the items durably (one
transaction, deduplicated) and hands the new ones to the queue. A worker then runs
`Pipeline.process(item_id)`, which is idempotent: it claims the item, holds its conversation
so no other worker touches the same customer at once, runs the item's handler, and settles
the item as done, to be retried later (exponential backoff with jitter, or the provider's
retry-after), or dead. Every write to a provider goes through `deliver`, which records the
intent before the call and the outcome after, so a crash in between never writes twice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import secrets
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import requests

from integrations.channels import Channel
from integrations.errors import (
    ConfigurationError,
    Deferral,
    DeskbridgeError,
    PayloadError,
    ProviderError,
    StoreUnavailable,
)
from integrations.events import (
    AgentReply,
    Deletion,
    Event,
    MessageKind,
    SocialMessage,
    SocialUser,
)
from integrations.helpdesk import (
    DeletionNotice,
    Helpdesk,
    HelpdeskComment,
    NewComment,
    NewTicket,
    WriteResult,
)
from integrations.linking import Action, LinkDecision, LinkRules, PendingClaim, decide
from integrations.lookup import StoreHelpdeskLookup
from integrations.payload import storable
from integrations.queue import QueueUnavailable, TaskQueue
from integrations.store import (
    REJECTED,
    AcceptResult,
    DeliveryStatus,
    IdentityRecord,
    ItemRecord,
    ItemStatus,
    LinkRecord,
    Store,
)

log = logging.getLogger("deskbridge.pipeline")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before attempt n+1, and when to give up."""

    max_attempts: int = 8
    base_seconds: float = 5.0
    max_seconds: float = 3600.0
    max_deferrals: int = 100  # rate-limit deferrals, counted apart from failures
    lease_seconds: float = 300.0
    busy_retry_seconds: float = 1.0  # when another worker holds the conversation

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, capped."""
        ceiling = min(self.max_seconds, self.base_seconds * float(2 ** max(0, attempt - 1)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def after_retry_after(self, retry_after: float, rng: random.Random) -> float:
        """At least what the provider asked, plus a little spread so retries do not stampede."""
        return retry_after + rng.uniform(0, min(5.0, 0.1 * retry_after + 0.5))


@dataclass(frozen=True)
class Route:
    """Where a channel account's messages go, and the mapping's rules."""

    mapping: str
    helpdesk: Helpdesk
    rules: LinkRules
    tags: tuple[str, ...] = ()
    long_replies: str = "thread"
    reply_link: str | None = None
    redact_deleted: bool = False
    group_id: int | None = None
    brand_id: int | None = None
    priority: str | None = None
    priority_followers: int | None = None
    vip_handles: frozenset[str] = frozenset()
    vip_priority: str = "high"

    def priority_for(self, author: SocialUser) -> str | None:
        """The new ticket's priority: the VIP one for a VIP or a large audience."""
        followers = author.follower_count or 0
        if author.handle.lower() in self.vip_handles or (
                self.priority_followers is not None and followers >= self.priority_followers):
            return self.vip_priority
        return self.priority


class Router(Protocol):
    def route(self, channel: str, account: str) -> Route | None:
        """The route for messages of this channel account, or None when none is mapped."""
        ...

    def helpdesk(self, name: str) -> Helpdesk:
        """The configured helpdesk of this name; raises ConfigurationError if there is none."""
        ...

    def channel(self, kind: str, account: str) -> Channel:
        """The configured channel for this account; raises ConfigurationError if none."""
        ...


class Permanent(DeskbridgeError):
    """An item that no retry can help: it goes straight to the dead letters."""


Handler = Callable[["Work"], str]


@dataclass
class Work:
    """One attempt at one item: what a handler needs, and the delivery helper."""

    pipeline: Pipeline
    item: ItemRecord
    event: Event

    @property
    def now(self) -> datetime:
        return self.pipeline.clock()

    def deliver(
        self, operation: str, target: str, write: Callable[[str], WriteResult],
        find: Callable[[str], WriteResult | None], *, slot: str | None = None,
    ) -> WriteResult:
        """Write once: record the intent, reconcile an unknown outcome, call, record the result.

        The idempotency key is the item's natural key and `slot` (default: the operation).
        A slot names the write, not how it is done: a retry must find the earlier attempt even
        if it would now choose another operation.
        Raises whatever `write` raises; a permanent provider refusal is recorded as failed,
        any other error leaves the intent open so the next attempt reconciles first.
        """
        store = self.pipeline.store
        key = delivery_key(self.item.natural_key, slot or operation)
        record, fresh = store.begin_delivery(key, self.item.id, target, operation, self.now)
        if record.status == DeliveryStatus.DONE and record.provider_id is not None:
            return WriteResult(record.ticket_id or "", record.provider_id)
        if not fresh and record.status == DeliveryStatus.INTENT:
            found = find(key)
            if found is not None:
                log.info("write found after unknown outcome", extra=_kv(self.item, key=key))
                store.complete_delivery(key, found.ticket_id, found.provider_id, self.now)
                return found
        try:
            result = write(key)
        except ProviderError as err:
            if err.is_permanent:
                store.fail_delivery(key, str(err), self.now)
            raise
        store.complete_delivery(key, result.ticket_id, result.provider_id, self.now)
        return result


def delivery_key(natural_key: tuple[str, str, str], slot: str) -> str:
    """The idempotency key of one write for one item: the same on every attempt."""
    return ":".join((*natural_key, slot))


def _kv(item: ItemRecord, **fields: object) -> dict[str, object]:
    return {"key": "/".join(item.natural_key), "item_id": item.id, **fields}


class Pipeline:
    """Accepts items, and processes them one at a time per conversation."""

    def __init__(
        self,
        store: Store,
        queue: TaskQueue,
        router: Router,
        *,
        policy: RetryPolicy | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        sweep_grace: timedelta = timedelta(minutes=2),
        handlers: Mapping[str, Handler] | None = None,
    ) -> None:
        self.store, self.queue, self.router = store, queue, router
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.rng = rng or random.Random()
        self.sweep_grace = sweep_grace
        self.handlers: dict[str, Handler] = {
            "message": handle_message, "deletion": handle_deletion,
            "agent_reply": handle_agent_reply, **(handlers or {})}
        queue.bind(self.process)

    # ------------------------------------------------------------ accept

    def accept(self, events: Sequence[Event], *, records: Sequence[str] | None = None,
               queue_now: bool = False) -> AcceptResult:
        """Store events durably (deduplicated) and queue the new ones.

        Returns once the items are committed; the queue write follows on a background thread,
        or before returning with `queue_now` (for a caller that is such a thread itself).
        `records` are the events' `event_json`, when the caller has made them already.
        A queue that is down does not fail the call: the items are safe in the store and the
        sweeper queues them later. Raises StoreUnavailable when they could not be stored.
        """
        now = self.clock()
        result = self.store.add_items(events, now, records)
        for event, is_new in zip(events, result.is_new, strict=True):
            status = "accepted" if is_new else "duplicate"
            log.info(status, extra={"key": "/".join(event.natural_key), "event": status})
        if queue_now:
            self.queue.send(list(result.new_ids))
        else:
            self.queue.hand_over(list(result.new_ids))
        return result

    # ------------------------------------------------------------ process

    def process(self, item_id: int) -> str:
        """Process one item once; a second run of a done item does nothing.

        Returns what happened: done, retry, deferred, dead, busy, waiting (not due yet: queued
        again for its time) or skipped (done, dead, or held by another worker).
        """
        item = self.store.get_item(item_id)
        if item is None or item.status in ItemStatus.FINISHED:
            return "skipped"
        owner = _owner_token()
        now = self.clock()
        lease = timedelta(seconds=self.policy.lease_seconds)
        if not self.store.acquire_lease(item.conversation_key, owner, now, lease):
            self._requeue(item_id, self.policy.busy_retry_seconds * (1 + self.rng.random()))
            return "busy"
        try:
            claimed = self.store.claim_item(item_id, owner, now, lease)
            if claimed is None:
                return self._not_claimed(item_id, now)
            return self._attempt(claimed, owner)
        finally:
            self.store.release_lease(item.conversation_key, owner)

    def _not_claimed(self, item_id: int, now: datetime) -> str:
        # A task that ran early (a duplicate, another machine's clock) must not strand its
        # item until the sweeper: it goes back on the queue for when the item is due.
        item = self.store.get_item(item_id)
        if item is not None and item.status in ItemStatus.WAITING \
                and item.next_attempt_at > now:
            self._requeue(item_id, (item.next_attempt_at - now).total_seconds())
            return "waiting"
        return "skipped"

    def _attempt(self, item: ItemRecord, owner: str) -> str:
        try:
            if item.event_type == REJECTED:
                raise Permanent(f"set aside when it was received: {item.payload.get('reason')}")
            handler = self.handlers.get(item.event_type)
            if handler is None:
                raise Permanent(f"no handler for {item.event_type!r} items yet")
            outcome = handler(Work(self, item, item.event))
        except Exception as err:  # noqa: BLE001 -- every failure is settled; none may lose the item
            return self._settle_failure(item, owner, err)
        self.store.finish_item(item.id, owner, self.clock(), outcome)
        log.info("done", extra=_kv(item, event="done", outcome=outcome, attempts=item.attempts))
        return "done"

    def _settle_failure(self, item: ItemRecord, owner: str, err: Exception) -> str:
        now = self.clock()
        reason = f"{type(err).__name__}: {err}"
        fields = _kv(item, error=reason, attempts=item.attempts)
        transient = _is_transient(err)
        wait = _asked_to_wait(err)
        if wait is not None:
            if item.deferrals < self.policy.max_deferrals:
                delay = self.policy.after_retry_after(wait, self.rng)
                return self._retry(item, owner, now, delay, reason, "deferred", fields,
                                   counts_as_attempt=False)
        elif transient and item.attempts < self.policy.max_attempts:
            delay = self.policy.backoff(item.attempts, self.rng)
            return self._retry(item, owner, now, delay, reason, "retry", fields)
        reason = _dead_reason(err, transient, item.attempts)
        self.store.kill_item(item.id, owner, now, reason)
        log.error("dead letter", extra=fields | {"event": "dead", "reason": reason})
        return "dead"

    def _retry(
        self, item: ItemRecord, owner: str, now: datetime, delay: float, reason: str,
        outcome: str, fields: dict[str, object], *, counts_as_attempt: bool = True,
    ) -> str:
        at = now + timedelta(seconds=delay)
        self.store.retry_item(item.id, owner, now, at, reason, counts_as_attempt=counts_as_attempt)
        log.warning(outcome, extra=fields | {"event": outcome, "retry_in_s": round(delay, 3)})
        self._requeue(item.id, delay)
        return outcome

    def _requeue(self, item_id: int, delay: float) -> None:
        now = self.clock()
        try:
            self.queue.enqueue(item_id, at=now + timedelta(seconds=delay), now=now)
        except QueueUnavailable as err:
            log.warning("queue down; the sweeper will send it", extra={
                "item_id": item_id, "error": str(err)})

    # ------------------------------------------------------------ sweep and replay

    def sweep(self) -> list[int]:
        """Queue again every item whose task seems lost (overdue, or its worker died)."""
        ids = self.store.due_for_sweep(self.clock(), self.sweep_grace)
        for item_id in ids:
            self._requeue(item_id, 0)
        if ids:
            log.warning("sweeper re-queued items", extra={"event": "swept", "count": len(ids)})
        return ids

    def replay(self, item_ids: Sequence[int] | None) -> list[int]:
        """Send dead letters round again (all of them when `item_ids` is None)."""
        ids = self.store.replay(item_ids, self.clock())
        for item_id in ids:
            self._requeue(item_id, 0)
        return ids


def _asked_to_wait(err: Exception) -> float | None:
    """Seconds to wait when the error is "not yet" (a rate limit, an item waiting its turn)."""
    if isinstance(err, Deferral):
        return err.retry_after
    if isinstance(err, ProviderError) and not err.is_permanent:
        return err.retry_after
    return None


def _is_transient(err: Exception) -> bool:
    """Whether a retry can fix it: an answer that did not come, a store or queue that is
    down, a provider that said "not now". Anything else (a value of the wrong type, a
    refusal, a missing handler, a configuration) fails the same way every time."""
    if isinstance(err, ProviderError):
        return not err.is_permanent
    if isinstance(err, requests.RequestException):  # these are OSErrors too, not all passing
        return isinstance(err, (requests.ConnectionError, requests.Timeout))
    return isinstance(err, (StoreUnavailable, QueueUnavailable, Deferral, OSError))


def _dead_reason(err: Exception, transient: bool, attempts: int) -> str:
    """Why an item is given up on, in words an admin (or an agent) can act on."""
    said = f"{type(err).__name__}: {err}"
    if transient:
        return f"gave up after {attempts} attempts; the last failed with {said}"
    if isinstance(err, ProviderError):
        return f"refused, and a retry cannot change that: {err}"
    if isinstance(err, (Permanent, PayloadError, ConfigurationError)):
        return f"cannot be processed, and a retry cannot change that: {said}"
    return f"cannot be processed as received, and a retry cannot change that ({said}); " \
           "its event is kept with the item"


def _owner_token() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{threading.get_ident() % 10**6}:" \
           f"{secrets.token_hex(4)}"


# ---------------------------------------------------------------- handlers


def handle_message(work: Work) -> str:
    """Link a social message to its ticket and write it there."""
    message = work.event
    if not isinstance(message, SocialMessage):
        raise Permanent("a message item does not hold a message")
    if work.item.deleted_at is not None:
        return "ignore: deleted by its author before it was processed"
    if message.is_own:
        ours = work.pipeline.store.delivery_by_provider_id(message.channel, message.message_id)
        if ours is not None:
            return f"ignore: our own answer from ticket {ours.ticket_id}, echoed by X"
    route = work.pipeline.router.route(message.channel, message.account)
    if route is None:
        return f"stored only: no mapping for {message.channel} account {message.account}"
    _wait_for_parent(work, message)
    helpdesk = route.helpdesk
    lookup = StoreHelpdeskLookup(work.pipeline.store, helpdesk)
    decision = decide(message, lookup, route.rules, work.now)
    if decision.action in (Action.IGNORE, Action.STORE_ONLY):
        return f"{decision.action.value}: {decision.reason}"
    known = _sender_user(lookup, message, decision) if message.author.is_known else None
    written, in_safe_form = _write(work, message, decision, route, known)
    if message.author.is_known:  # nobody to remember as a requester or a claimant
        if written.requester_id and written.requester_id != known:
            _record_requester(work, message, helpdesk.name, written.requester_id)
        if decision.claim is not None:
            _record_claim(work, message, decision.claim, helpdesk.name)
    work.pipeline.store.record_link(work.item.id, LinkRecord(
        message_id=message.message_id, helpdesk=helpdesk.name, ticket_id=written.ticket_id,
        action=decision.action.value, rule=decision.rule.value, reason=decision.reason,
        verified=decision.verified, public=decision.public,
        conversation_id=message.conversation_id, author_id=message.author.user_id,
        channel=message.channel, account=message.account, message_kind=message.kind.value,
    ), work.now)
    outcome = f"{decision.action.value} on {helpdesk.name} ticket {written.ticket_id} " \
              f"({decision.rule.value}: {decision.reason})"
    return f"{outcome}; written in a safe form" if in_safe_form else outcome


# A message is written to its helpdesk once, whichever way: after a crash the world may have
# changed through our own unrecorded write (the customer now has a ticket), so a second
# decision could differ from the first; one key makes the retry find the first write instead.
HELPDESK_SLOT = "helpdesk"
# The one write of a message in a safe form, after the helpdesk refused it as it was: a slot
# of its own, so the refused write's failed record never stands in its way, and a retry
# that finds it begun goes on with it (never back to the form that was refused).
SAFE_SLOT = "helpdesk:safe"
# Statuses with which a helpdesk refuses what a request holds rather than the request:
# Zendesk answers 422 RecordInvalid, with `details` naming the field (a comment's body, say),
# 400 for a body it cannot read, 413 for one too large.
# https://developer.zendesk.com/api-reference/introduction/requests/
REFUSED_AS_WRITTEN = frozenset({400, 413, 422})
SAFE_TEXT_CHARS = 10_000
SAFE_NOTE = "written in a safe form (control characters removed, length bounded); the " \
            "message as received is kept in deskbridge's store, item {item_id}"
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")


def _write(work: Work, message: SocialMessage, decision: LinkDecision, route: Route,
           sender_user: str | None) -> tuple[WriteResult, bool]:
    """Carry out a decision on the helpdesk; True with it when the message went in a safe
    form, because the helpdesk refused it as it was."""
    safe_key = delivery_key(work.item.natural_key, SAFE_SLOT)
    if work.pipeline.store.delivery(safe_key) is None:
        try:
            return _write_as(work, message, decision, route, sender_user, HELPDESK_SLOT), False
        except Exception as err:
            if not _refused_as_written(err):
                raise
            log.warning("helpdesk refused the message as it was; writing it in a safe form",
                        extra=_kv(work.item, error=f"{type(err).__name__}: {err}"))
    note = SAFE_NOTE.format(item_id=work.item.id)
    safe = dataclasses.replace(decision, reason=f"{decision.reason}; {note}")
    return _write_as(work, safe_message(message), safe, route, sender_user, SAFE_SLOT), True


def _refused_as_written(err: Exception) -> bool:
    if isinstance(err, ProviderError):
        return err.is_permanent and err.status in REFUSED_AS_WRITTEN
    return isinstance(err, UnicodeError)  # the adapter could not even encode it


def safe_message(message: SocialMessage) -> SocialMessage:
    """Return the message with text (and the author's name) every helpdesk takes: valid
    Unicode, no control characters but newline and tab, at most SAFE_TEXT_CHARS."""
    text = _CONTROL.sub("", storable(message.text))
    if len(text) > SAFE_TEXT_CHARS:
        text = text[:SAFE_TEXT_CHARS - 1] + "…"
    author = dataclasses.replace(
        message.author, display_name=_CONTROL.sub("", storable(message.author.display_name)))
    return dataclasses.replace(message, text=text, author=author)


def _write_as(work: Work, message: SocialMessage, decision: LinkDecision, route: Route,
              sender_user: str | None, slot: str) -> WriteResult:
    """A new ticket (or follow-up), or a comment, written under `slot`."""
    helpdesk = route.helpdesk
    if decision.action in (Action.CREATE, Action.FOLLOW_UP):
        request = NewTicket(message, subject=_subject(message), tags=route.tags,
                            follow_up_of=decision.ticket_id, verified=decision.verified,
                            reason=decision.reason, requester_id=sender_user,
                            public=decision.public, group_id=route.group_id,
                            brand_id=route.brand_id,
                            priority=route.priority_for(message.author))
        return work.deliver("create_ticket", helpdesk.name,
                            lambda key: helpdesk.create_ticket(request, key), helpdesk.find_write,
                            slot=slot)
    assert decision.ticket_id is not None
    comment = NewComment(decision.ticket_id, message, public=decision.public,
                         verified=decision.verified, reason=decision.reason,
                         author_id=sender_user if decision.verified else None)
    return work.deliver("comment", helpdesk.name,
                        lambda key: helpdesk.add_comment(comment, key),
                        lambda key: helpdesk.find_write(key, comment.ticket_id),
                        slot=slot)


def written_key(store: Store, message_key: tuple[str, str, str]) -> str:
    """The idempotency key a message was written to its helpdesk with (its write marker)."""
    safe = store.delivery(delivery_key(message_key, SAFE_SLOT))
    if safe is not None and safe.status == DeliveryStatus.DONE:
        return safe.idempotency_key
    return delivery_key(message_key, HELPDESK_SLOT)


def _sender_user(lookup: StoreHelpdeskLookup, message: SocialMessage,
                 decision: LinkDecision) -> str | None:
    """The helpdesk user who is the sender, when known: a verified message on a ticket
    was written by its requester (already read), else ask who the sender is."""
    if decision.verified and decision.ticket_id and decision.action == Action.COMMENT:
        ticket = lookup.known_ticket(decision.ticket_id)
        if ticket is not None and ticket.requester_id:
            return ticket.requester_id
    sender = lookup.sender(message.author)
    return sender.helpdesk_user_id if sender is not None and sender.verified else None


def _record_requester(work: Work, message: SocialMessage, helpdesk: str, user_id: str) -> None:
    """The helpdesk opened a ticket for this sender: remember who they are there."""
    author = message.author
    work.pipeline.store.save_identity(IdentityRecord(
        channel=author.channel, social_user_id=author.user_id, handle=author.handle,
        helpdesk=helpdesk, helpdesk_user_id=user_id, status="verified", ticket_id=None),
        work.now)


def _record_claim(work: Work, message: SocialMessage, claim: PendingClaim, helpdesk: str) -> None:
    """The sender claims a ticket it is not known to own; an agent confirms it later."""
    author = message.author
    known = work.pipeline.store.identities_for(author.channel, author.user_id)
    if any(i.helpdesk == helpdesk and i.status == "verified" for i in known):
        return
    work.pipeline.store.save_identity(IdentityRecord(
        channel=author.channel, social_user_id=author.user_id, handle=author.handle,
        helpdesk=helpdesk, helpdesk_user_id=claim.requester_id or "", status="pending",
        ticket_id=claim.ticket_id), work.now)


PARENT_WAIT_SECONDS = 2.0


def _wait_for_parent(work: Work, message: SocialMessage) -> None:
    """X does not promise order: a reply may arrive before the post it answers. When that
    post is in the inbox but not processed yet, wait for it, so the reply finds its ticket.

    Raises Deferral while the parent is still on its way.
    """
    if not message.in_reply_to_id:
        return
    parent = work.pipeline.store.find_item(message.channel, message.account,
                                           message.in_reply_to_id)
    if parent is not None and parent.status not in ItemStatus.FINISHED:
        raise Deferral(f"waiting for message {message.in_reply_to_id}, which it answers",
                       PARENT_WAIT_SECONDS)


def _subject(message: SocialMessage) -> str:
    first_line = " ".join(message.text.split())
    label = "DM" if message.kind.value == "dm" else "X"
    text = first_line if len(first_line) <= 60 else first_line[:59].rstrip() + "…"
    return f"{label} from @{message.author.handle}: {text}"


def handle_deletion(work: Work) -> str:
    """Honour a deleted message: blank our copy, and note it on its ticket."""
    deletion = work.event
    if not isinstance(deletion, Deletion):
        raise Permanent("a deletion item does not hold a deletion")
    store = work.pipeline.store
    stored = store.mark_deleted(deletion.channel, deletion.account, deletion.message_id, work.now)
    link = store.link_for_message(deletion.channel, deletion.account, deletion.message_id)
    if link is None:
        return "deleted: our copy blanked" if stored else "deleted: we never stored it"
    helpdesk = work.pipeline.router.helpdesk(link.helpdesk)
    route = work.pipeline.router.route(deletion.channel, deletion.account)
    message_key = (deletion.channel, deletion.account, deletion.message_id)
    original = written_key(store, message_key)
    notice = DeletionNotice(link.ticket_id, deletion, redact=bool(route and route.redact_deleted),
                            original_key=original)
    work.deliver("deletion_note", helpdesk.name,
                 lambda key: helpdesk.record_deletion(notice, key),
                 lambda key: helpdesk.find_write(key, notice.ticket_id))
    return f"deleted: our copy blanked, noted on {helpdesk.name} ticket {link.ticket_id}"


ANSWERABLE_KINDS = {k.value for k in (MessageKind.MENTION, MessageKind.REPLY, MessageKind.QUOTE,
                                      MessageKind.DM)}


def handle_agent_reply(work: Work) -> str:
    """Send an agent's public answer to the customer, where the conversation runs.

    The webhook only says that a comment exists: the comment is read back from the helpdesk
    (one call) before anything goes out, and what is sent is the helpdesk's text, never the
    webhook's. A comment that is not on the ticket, not public, or not written by staff sends
    nothing. The answer goes to the latest verified message on the ticket: a reply (or a
    numbered thread) under a post, or a DM after a DM; nothing goes to a sender whose claim
    on the ticket is unverified (that would reveal the ticket).
    """
    reply = work.event
    if not isinstance(reply, AgentReply):
        raise Permanent("an agent reply item does not hold an agent reply")
    if not reply.public:
        return "ignore: an internal note is never sent"
    links = work.pipeline.store.links_for_ticket(reply.helpdesk, reply.ticket_id)
    # A link without its author (X did not say who wrote the post) is never answered.
    customer = [lk for lk in links if lk.verified and lk.author_id
                and lk.message_kind in ANSWERABLE_KINDS]
    if not customer:
        raise Permanent(f"ticket {reply.ticket_id} has no verified social conversation to answer")
    router = work.pipeline.router
    comment = router.helpdesk(reply.helpdesk).get_comment(reply.ticket_id, reply.comment_id)
    refusal = _unsendable(reply, comment)
    if refusal is not None or comment is None:
        return f"ignore: {refusal}"
    last = customer[-1]
    channel = router.channel(last.channel, last.account)
    if last.message_kind == MessageKind.DM.value:
        assert last.author_id is not None
        sent = _send_dm(work, channel, reply.ticket_id, last.author_id, comment.body)
        return f"answered by DM {sent} to user {last.author_id}"
    route = router.route(last.channel, last.account)
    mode, template = (route.long_replies, route.reply_link) if route else ("thread", None)
    link = template.format(ticket_id=reply.ticket_id) if template else None
    posts = _send_thread(work, channel, reply.ticket_id, last.message_id,
                         channel.fit_reply(comment.body, mode, link))
    return f"answered on {last.channel} in reply to {last.message_id}: {', '.join(posts)}"


def _unsendable(reply: AgentReply, comment: HelpdeskComment | None) -> str | None:
    """Why the comment the webhook names must not go out, in an agent's words; None if it may."""
    where = f"comment {reply.comment_id}"
    if comment is None:
        return f"{where} is not on ticket {reply.ticket_id}"
    if not comment.public:
        return f"{where} on ticket {reply.ticket_id} is an internal note, never sent"
    if not comment.is_by_staff:
        who = comment.author_role or "an author the helpdesk does not name"
        return f"{where} on ticket {reply.ticket_id} was written by {who}, not by an agent"
    if not comment.body.strip():
        return "an empty answer is never sent"
    return None


def _send_dm(work: Work, channel: Channel, ticket_id: str, recipient: str, text: str) -> str:
    written = work.deliver(
        "dm", channel.kind,
        lambda key: WriteResult(ticket_id, channel.send_dm(recipient, text)),
        lambda key: _found(ticket_id, channel.find_dm(recipient, text)))
    return written.provider_id


def _send_thread(
    work: Work, channel: Channel, ticket_id: str, parent: str, parts: list[str],
) -> list[str]:
    posted = []
    for number, part in enumerate(parts, 1):
        written = _send_reply(work, channel, ticket_id, number, parent, part)
        posted.append(written.provider_id)
        parent = written.provider_id  # each part answers the one before it
    return posted


def _send_reply(
    work: Work, channel: Channel, ticket_id: str, number: int, parent: str, text: str,
) -> WriteResult:
    def send(key: str) -> WriteResult:
        return WriteResult(ticket_id, channel.send_reply(parent, text))

    def find(key: str) -> WriteResult | None:
        return _found(ticket_id, channel.find_reply(parent, text))

    return work.deliver(f"reply:{number}", channel.kind, send, find)


def _found(ticket_id: str, provider_id: str | None) -> WriteResult | None:
    return WriteResult(ticket_id, provider_id) if provider_id else None
