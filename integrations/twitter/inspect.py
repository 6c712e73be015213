"""`deskbridge inspect x`: the normalised messages in any X payload, as DESIGN.md lays out.

Reads a webhook body (Account Activity or X Activity API) or a v2 API response (a list of
posts or DM events, or one of them) and gives one JSON-ready dict per message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from integrations.errors import PayloadError
from integrations.events import Deletion, Event, MessageKind, SocialMessage
from integrations.twitter.webhooks import (
    NOTICES,
    load_json,
    parse_delivery,
    parse_v2_dm,
    parse_v2_post,
    users_by_id,
)


def inspect_payload(body: bytes, account: str = "") -> list[dict[str, Any]]:
    """One dict per message found; raises PayloadError for what is not an X payload."""
    payload = load_json(body)
    if "for_user_id" in payload or NOTICES & payload.keys() or (
            isinstance(payload.get("data"), Mapping) and "event_type" in payload["data"]):
        return [describe(e) for e in parse_delivery(body, datetime.now(UTC)).events]
    return [describe(e) for e in _api_events(payload, account)]


def _api_events(payload: Mapping[str, Any], account: str) -> list[Event]:
    data = payload.get("data")
    items = data if isinstance(data, list) else [data] if isinstance(data, Mapping) else None
    if items is None:
        raise PayloadError("no X webhook events and no v2 `data` in this payload")
    users = users_by_id(payload.get("includes"))
    return [parse_v2_dm(item, users, account) if "event_type" in item or "sender_id" in item
            else parse_v2_post(item, users, account) for item in items]


def describe(event: Event) -> dict[str, Any]:
    """The fields of DESIGN.md's inspect contract (ids as strings), and a few more."""
    if isinstance(event, Deletion):
        return {"message_id": event.message_id, "kind": MessageKind.DELETE.value,
                "author_id": event.author_id, "author_handle": None, "text": "",
                "in_reply_to_id": None, "conversation_id": None, "is_own":
                event.author_id == event.account, "account": event.account,
                "created_at": event.deleted_at.isoformat()}
    if not isinstance(event, SocialMessage):
        raise PayloadError("not a social message")
    return {
        "message_id": event.message_id, "kind": event.kind.value,
        "author_id": event.author.user_id, "author_handle": event.author.handle,
        "text": event.text, "in_reply_to_id": event.in_reply_to_id,
        "conversation_id": event.conversation_id, "is_own": event.is_own,
        "account": event.account, "created_at": event.created_at.isoformat(),
        "expanded_urls": list(event.expanded_urls), "permalink": event.permalink,
        "language": event.language,
    }
