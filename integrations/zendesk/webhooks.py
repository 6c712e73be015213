"""Zendesk webhooks, sans I/O: signature checks, and trigger bodies → what deskbridge does.

deskbridge's Zendesk triggers (made by `deskbridge zendesk setup`) notify one webhook with a
JSON body of our own design, `trigger_body(event)`, rendered by Zendesk's Liquid placeholders:
- "comment": an agent added a comment to a deskbridge ticket → an `AgentReply` for the inbox
  (a notification only: the worker reads the comment back through the API, see `load_body`);
- "tagged": an agent added the tag `deskbridge_verified` (a macro) → a `ConfirmClaim`.
Anything else is `Ignored`, never a crash.

Every request is signed: `X-Zendesk-Webhook-Signature: base64(HMAC-SHA256(signing secret,
timestamp + raw body))`, the timestamp (ISO 8601, "2021-03-25T05:09:27Z") being
`X-Zendesk-Webhook-Signature-Timestamp`.
https://developer.zendesk.com/documentation/webhooks/verifying/
https://developer.zendesk.com/documentation/webhooks/anatomy-of-a-webhook-request/
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from integrations.errors import PayloadError, VerificationError
from integrations.events import AgentReply
from integrations.payload import (
    check_depth,
    digits,
    not_utf8,
    parse_json,
    required_digits,
    storable,
)
from integrations.payload import text as payload_text

SIGNATURE_HEADER = "x-zendesk-webhook-signature"
TIMESTAMP_HEADER = "x-zendesk-webhook-signature-timestamp"
INVOCATION_HEADER = "x-zendesk-webhook-invocation-id"  # the same for every retry of a call
REPLAY_WINDOW = timedelta(minutes=5)
VERIFIED_TAG = "deskbridge_verified"
MAX_FIELD = 1_000  # characters of a short field (status, role, name, time, one tag)

# Our trigger events (the "event" value each of deskbridge's triggers puts in its body) → what
# deskbridge does with them. The names are ours: a trigger's body is whatever we ask for.
# https://support.zendesk.com/hc/en-us/articles/4408839108378 (connecting a webhook to a trigger)
TRIGGER_EVENTS: dict[str, str] = {
    "comment": "agent_reply",
    "tagged": "confirm_claim",
}

# The body every deskbridge trigger sends: JSON key → Zendesk placeholder, in this order.
# https://support.zendesk.com/hc/en-us/articles/4408886858138 (placeholders reference)
# - One comment throughout (`latest_comment`): its id, text and is_public always agree, and an
#   internal note arrives marked as one instead of borrowing the last public comment's id.
# - `updated_at_with_timestamp` is ISO 8601; a comment's own `created_at` renders as a date
#   only ("August 17, 2026"), useless for ordering.
# - Every value is quoted, so an empty placeholder still leaves valid JSON. The free-text
#   fields come last: should Zendesk ever leave a quote in the comment unescaped, everything
#   before it still parses (see `load_body`).
BODY_TEMPLATE: dict[str, str] = {
    "ticket_id": "{{ticket.id}}",
    "ticket_status": "{{ticket.status}}",
    "tags": "{{ticket.tags}}",
    "requester_id": "{{ticket.requester.id}}",
    "comment_id": "{{ticket.latest_comment.id}}",
    "comment_public": "{{ticket.latest_comment.is_public}}",
    "author_id": "{{ticket.latest_comment.author.id}}",
    "author_role": "{{ticket.latest_comment.author.role}}",
    "created_at": "{{ticket.updated_at_with_timestamp}}",
    "author_name": "{{ticket.latest_comment.author.name}}",
    "comment_body": "{{ticket.latest_comment.value}}",
}


def trigger_body(event: str) -> str:
    """The JSON body template of the trigger for `event` ("comment" or "tagged").

    Raises ValueError for an event deskbridge has no trigger for.
    """
    if event not in TRIGGER_EVENTS:
        raise ValueError(f"no deskbridge trigger sends {event!r}")
    return json.dumps({"event": event, **BODY_TEMPLATE}, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------- signatures


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Zendesk-Webhook-Signature` Zendesk computes for a timestamp and raw body."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_signature(
    headers: Mapping[str, str], body: bytes, secret: str | None, now: datetime,
    window: timedelta = REPLAY_WINDOW,
) -> None:
    """Check that Zendesk signed this raw body, recently.

    Fails closed: raises VerificationError when no secret is configured, the signature or
    its timestamp is missing, the signature does not match (compared in constant time), or
    the timestamp is unreadable or further than `window` from `now`.
    """
    if not secret:
        raise VerificationError("no Zendesk webhook secret is configured to verify this request")
    lowered = {k.lower(): v for k, v in headers.items()}
    given = lowered.get(SIGNATURE_HEADER, "").strip()
    timestamp = lowered.get(TIMESTAMP_HEADER, "")
    if not given:
        raise VerificationError(f"missing {SIGNATURE_HEADER} header")
    if not timestamp.strip():
        raise VerificationError(f"missing {TIMESTAMP_HEADER} header")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), given.encode()):
        raise VerificationError(f"{SIGNATURE_HEADER} does not match the timestamp and body")
    _check_fresh(timestamp, now, window)


def _check_fresh(timestamp: str, now: datetime, window: timedelta) -> None:
    try:
        signed_at = datetime.fromisoformat(timestamp.strip())
    except ValueError as err:
        raise VerificationError(f"{TIMESTAMP_HEADER} is not an ISO 8601 time") from err
    if signed_at.tzinfo is None:
        signed_at = signed_at.replace(tzinfo=UTC)
    age = now - signed_at
    if age > window:
        raise VerificationError(
            f"stale signature: signed {int(age.total_seconds())}s ago, more than the "
            f"{int(window.total_seconds())}s allowed")
    if -age > window:
        raise VerificationError("signature timestamp is in the future beyond the allowed skew")


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class ConfirmClaim:
    """An agent confirmed the pending identity claims on a ticket (tag deskbridge_verified)."""

    helpdesk: str
    ticket_id: str


@dataclass(frozen=True)
class Ignored:
    """A delivery deskbridge acknowledges and does nothing with, and why."""

    reason: str


ZendeskEvent: TypeAlias = AgentReply | ConfirmClaim | Ignored


def parse_webhook(
    body: bytes, helpdesk_name: str, invocation_id: str | None,
    *, received_at: datetime | None = None,
) -> ZendeskEvent:
    """Return what one trigger delivery asks deskbridge to do, for the helpdesk it was sent to.

    Only the ids are taken as they come: the body is rendered from placeholders, so its
    text can hold whatever an agent typed, and the worker reads the comment back through the
    API before anything goes out (`pipeline.handle_agent_reply`). `invocation_id` (the
    `x-zendesk-webhook-invocation-id` header) is kept with the reply for the record;
    `received_at` dates a reply whose `created_at` is unreadable. Raises PayloadError, with
    the field, for a malformed body.
    """
    payload = load_body(body)
    event = payload_text(payload.get("event"), "event")
    action = TRIGGER_EVENTS.get(event)
    if action is None:
        return Ignored(f"not a deskbridge trigger event: {event[:40]!r}")
    ticket_id = required_digits(payload.get("ticket_id"), "ticket_id")
    if action == "confirm_claim":
        return confirmation(helpdesk_name, ticket_id, payload.get("tags")) or Ignored(
            f"ticket {ticket_id} is not tagged {VERIFIED_TAG}")
    return _agent_reply(payload, helpdesk_name, ticket_id, invocation_id, received_at)


def _agent_reply(
    payload: dict[str, Any], helpdesk: str, ticket_id: str, invocation_id: str | None,
    received_at: datetime | None,
) -> AgentReply | Ignored:
    fields = _reply_fields(payload)
    if is_customer_comment(fields):
        # deskbridge itself writes the customer's posts as public comments by the requester;
        # answering those would send customers their own words. (The worker checks the
        # author again from the API; this only spares it the call.)
        return Ignored(f"the latest comment on ticket {ticket_id} is the customer's own")
    comment_id = digits(payload.get("comment_id"), "comment_id")
    if comment_id is None:  # the answer cannot be read back, so it could never be sent
        raise PayloadError("comment_id is missing: the trigger's body must render "
                           f"{BODY_TEMPLATE['comment_id']} (run `deskbridge zendesk setup`)")
    raw = {**fields, "ticket_id": ticket_id, "comment_id": comment_id}
    if invocation_id:
        raw["invocation_id"] = storable(invocation_id[:64])  # a header: not signed, not refused
    return AgentReply(
        helpdesk=helpdesk, ticket_id=ticket_id, comment_id=comment_id,
        text=fields["comment_body"], public=fields["comment_public"] == "true",
        created_at=_time(fields["created_at"], received_at),
        author_name=fields["author_name"], raw=raw,
    )


def _reply_fields(payload: Mapping[str, Any]) -> dict[str, str]:
    """Return the template's other fields, checked and storable: what the inbox keeps of the
    body (the raw body itself may hold NUL or lone surrogates no store can take)."""
    fields = {key: payload_text(payload.get(key), key, max_chars=MAX_FIELD)
              for key in ("ticket_status", "author_role", "created_at", "author_name")}
    fields["tags"] = " ".join(sorted(parse_tags(payload.get("tags"))))
    fields["comment_body"] = payload_text(payload.get("comment_body"), "comment_body")
    fields["comment_public"] = "true" if is_true(payload.get("comment_public"),
                                                 "comment_public") else "false"
    for key in ("requester_id", "author_id"):
        fields[key] = digits(payload.get(key), key) or ""
    return fields


def is_customer_comment(fields: Mapping[str, str]) -> bool:
    """Return whether the comment was written by an end user or by the ticket's requester."""
    # "end-user" in Zendesk's API; accept the underscore spelling too (placeholders' rendering
    # of the role is not documented).
    if fields.get("author_role", "").strip().lower().replace("_", "-") == "end-user":
        return True
    author = fields.get("author_id", "")
    return bool(author) and author == fields.get("requester_id", "")


def confirmation(helpdesk: str, ticket_id: str, tags: Any) -> ConfirmClaim | None:
    """Return the confirmation of the ticket's pending claims when it carries the verified tag,
    whichever trigger reports it: a macro may tag and answer in one update, and its "comment"
    webhook may arrive before its "tagged" one. Raises PayloadError for unreadable tags."""
    return ConfirmClaim(helpdesk, ticket_id) if VERIFIED_TAG in parse_tags(tags) else None


def parse_tags(value: Any) -> frozenset[str]:
    """Return `{{ticket.tags}}` (space-separated) or a JSON list of tags as a set.

    Raises PayloadError when it is neither, or a tag is not a string.
    """
    if isinstance(value, list):
        return frozenset(payload_text(tag, "tags[]", max_chars=MAX_FIELD) for tag in value)
    tags = payload_text(value, "tags")
    return frozenset(re.split(r"[\s,]+", tags.strip())) - {""}


def is_true(value: Any, where: str = "comment_public") -> bool:
    """Return a rendered Liquid boolean ("true"/"false", or a JSON boolean) as a bool; anything
    else a string can say counts as false. Raises PayloadError for another JSON type."""
    if isinstance(value, bool):
        return value
    return payload_text(value, where, max_chars=MAX_FIELD).strip().lower() in ("true", "1")


# ---------------------------------------------------------------- the body


# The free-text field our template puts last, up to the end of the object.
_TRAILING_TEXT = re.compile(r'"comment_body"\s*:\s*"(?P<text>.*)"\s*}\s*\Z', re.DOTALL)


def load_body(body: bytes) -> dict[str, Any]:
    """Return the body as a JSON object; raises PayloadError with the reason otherwise.

    Raw newlines inside strings are accepted (`strict=False`). If the body still does not
    parse but has our template's shape, the comment text is taken as everything between its
    opening quote and the closing `"}`: the ids before it still count, and the text is only
    shown (what goes out is read back from the API).

    A key given twice keeps its FIRST value. A duplicate is what a quote Zendesk left
    unescaped looks like: a comment ending in `", "ticket_id": "999` adds a second ticket_id
    after the real one, and `json`'s last-wins would take the agent's text for the ticket.
    Every field of our template comes before the free text, so the first value is the one
    Zendesk rendered from `{{ticket.id}}`. Refusing the body instead would also be safe, but
    would lose the agent's real answer, which the read-back can still check and send.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise not_utf8(err) from err
    try:
        payload = _loads(text)
    except json.JSONDecodeError as err:
        payload = _recover_trailing_text(text)
        if payload is None:
            raise PayloadError(f"body is not valid JSON: {err}") from err
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object")
    check_depth(payload)
    return payload


def _loads(text: str) -> Any:
    """Parse with first-wins keys; raises json.JSONDecodeError, or PayloadError for JSON no
    field could hold (`payload.parse_json`)."""
    return parse_json(text, lambda t: json.loads(t, strict=False, object_pairs_hook=_first_wins))


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        result.setdefault(key, value)
    return result


def _recover_trailing_text(text: str) -> dict[str, Any] | None:
    match = _TRAILING_TEXT.search(text)
    if match is None:
        return None
    head = text[:match.start()].rstrip().rstrip(",") + "}"
    try:
        payload = _loads(head)
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    payload.setdefault("comment_body", _unescape(match.group("text")))
    return payload


def _unescape(raw: str) -> str:
    # Escaped in part (say newlines but not quotes): keep the escapes that do decode.
    try:
        decoded = json.loads(f'"{raw}"', strict=False)
    except (json.JSONDecodeError, RecursionError, ValueError):
        return raw
    return decoded if isinstance(decoded, str) else raw


# ---------------------------------------------------------------- small helpers


def _time(value: str, fallback: datetime | None) -> datetime:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as err:
        if fallback is None:
            raise PayloadError(f"created_at is not an ISO 8601 time: {value[:40]!r}") from err
        return fallback
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
