"""Zendesk webhooks, sans I/O: signature checks, and trigger bodies → what deskbridge does.

deskbridge's Zendesk triggers (made by `deskbridge zendesk setup`) notify one webhook with a
JSON body of our own design, `trigger_body(event)`, rendered by Zendesk's Liquid placeholders:
- "comment": an agent added a comment to a deskbridge ticket → an `AgentReply` for the inbox;
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

SIGNATURE_HEADER = "x-zendesk-webhook-signature"
TIMESTAMP_HEADER = "x-zendesk-webhook-signature-timestamp"
INVOCATION_HEADER = "x-zendesk-webhook-invocation-id"  # the same for every retry of a call
REPLAY_WINDOW = timedelta(minutes=5)
VERIFIED_TAG = "deskbridge_verified"

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
    """What one trigger delivery asks deskbridge to do, for the helpdesk it was sent to.

    `invocation_id` (the `x-zendesk-webhook-invocation-id` header) stands in for a comment id
    the body lacks, so retries still deduplicate; `received_at` dates a reply whose
    `created_at` is unreadable. Raises PayloadError, with the reason, for a malformed body.
    """
    payload = load_body(body)
    event = str(payload.get("event") or "")
    action = TRIGGER_EVENTS.get(event)
    if action is None:
        return Ignored(f"not a deskbridge trigger event: {event!r}")
    ticket_id = _ticket_id(payload.get("ticket_id"))
    if action == "confirm_claim":
        return confirmation(helpdesk_name, ticket_id, payload.get("tags")) or Ignored(
            f"ticket {ticket_id} is not tagged {VERIFIED_TAG}")
    return _agent_reply(payload, helpdesk_name, ticket_id, invocation_id, received_at)


def _agent_reply(
    payload: dict[str, Any], helpdesk: str, ticket_id: str, invocation_id: str | None,
    received_at: datetime | None,
) -> AgentReply | Ignored:
    if is_customer_comment(payload):
        # deskbridge itself writes the customer's posts as public comments by the requester;
        # answering those would send customers their own words.
        return Ignored(f"the latest comment on ticket {ticket_id} is the customer's own")
    comment_id = _text(payload.get("comment_id")) or (
        f"invocation:{invocation_id}" if invocation_id else "")
    if not comment_id:
        raise PayloadError("comment_id is missing and there is no invocation id to dedupe by")
    return AgentReply(
        helpdesk=helpdesk, ticket_id=ticket_id, comment_id=comment_id,
        text=_text(payload.get("comment_body")), public=is_true(payload.get("comment_public")),
        created_at=_time(payload.get("created_at"), received_at),
        author_name=_text(payload.get("author_name")), raw=payload,
    )


def is_customer_comment(payload: Mapping[str, Any]) -> bool:
    """Whether the comment was written by an end user or by the ticket's requester."""
    # "end-user" in Zendesk's API; accept the underscore spelling too (placeholders' rendering
    # of the role is not documented).
    if _text(payload.get("author_role")).lower().replace("_", "-") == "end-user":
        return True
    author = _text(payload.get("author_id"))
    return bool(author) and author == _text(payload.get("requester_id"))


def confirmation(helpdesk: str, ticket_id: str, tags: Any) -> ConfirmClaim | None:
    """The ticket's pending claims are confirmed when it carries the verified tag, whichever
    trigger reports it: a macro may tag and answer in one update, and its "comment" webhook
    may arrive before its "tagged" one."""
    return ConfirmClaim(helpdesk, ticket_id) if VERIFIED_TAG in parse_tags(tags) else None


def parse_tags(value: Any) -> frozenset[str]:
    """`{{ticket.tags}}` (space-separated) or a JSON list, as a set of tags."""
    if isinstance(value, list):
        return frozenset(str(tag) for tag in value)
    return frozenset(re.split(r"[\s,]+", str(value or "").strip())) - {""}


def is_true(value: Any) -> bool:
    """A rendered Liquid boolean ("true"/"false"); anything unreadable counts as false."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1")


# ---------------------------------------------------------------- the body


# The free-text field our template puts last, up to the end of the object.
_TRAILING_TEXT = re.compile(r'"comment_body"\s*:\s*"(?P<text>.*)"\s*}\s*\Z', re.DOTALL)


def load_body(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; raises PayloadError with the reason otherwise.

    Raw newlines inside strings are accepted (`strict=False`). If the body still does not
    parse but has our template's shape, the comment text is taken as everything between its
    opening quote and the closing `"}`, so a quote Zendesk left unescaped loses nothing.
    """
    try:
        text = body.decode("utf-8")
        payload = json.loads(text, strict=False)
    except UnicodeDecodeError as err:
        raise PayloadError(f"body is not valid JSON: not UTF-8 ({err})") from err
    except json.JSONDecodeError as err:
        payload = _recover_trailing_text(text)
        if payload is None:
            raise PayloadError(f"body is not valid JSON: {err}") from err
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object")
    return payload


def _recover_trailing_text(text: str) -> dict[str, Any] | None:
    match = _TRAILING_TEXT.search(text)
    if match is None:
        return None
    head = text[:match.start()].rstrip().rstrip(",") + "}"
    try:
        payload = json.loads(head, strict=False)
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    payload["comment_body"] = _unescape(match.group("text"))
    return payload


def _unescape(raw: str) -> str:
    # Escaped in part (say newlines but not quotes): keep the escapes that do decode.
    try:
        decoded = json.loads(f'"{raw}"', strict=False)
    except json.JSONDecodeError:
        return raw
    return decoded if isinstance(decoded, str) else raw


# ---------------------------------------------------------------- small helpers


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _ticket_id(value: Any) -> str:
    ticket_id = _text(value)
    if not ticket_id:
        raise PayloadError("ticket_id is missing")
    if not ticket_id.isdigit():
        raise PayloadError(f"ticket_id is not a Zendesk ticket id: {ticket_id!r}")
    return ticket_id


def _time(value: Any, fallback: datetime | None) -> datetime:
    try:
        moment = datetime.fromisoformat(_text(value))
    except ValueError as err:
        if fallback is None:
            raise PayloadError(f"created_at is not an ISO 8601 time: {value!r}") from err
        return fallback
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
