"""`deskbridge inspect x`: the normalised messages in any X payload, as DESIGN.md lays out.

Reads a webhook body (Account Activity or X Activity API) or a v2 API response (a page of
posts or DM events, or one of them) and gives one JSON-ready dict per message. A webhook body
is read whole or refused; an API page is read as polling reads it: an entry that does not fit
is skipped with a log line, the rest is printed, and an empty page prints nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from integrations import payload
from integrations.errors import PayloadError
from integrations.events import Deletion, Event, MessageKind, SocialMessage
from integrations.twitter.polling import read_page
from integrations.twitter.webhooks import (
    NOTICES,
    load_json,
    parse_delivery,
    parse_v2_dm,
    parse_v2_post,
)


def inspect_payload(body: bytes, account: str = "") -> list[dict[str, Any]]:
    """Return one dict per message found; raises PayloadError for what is not an X payload."""
    loaded = load_json(body)
    if _is_webhook_body(loaded):
        return [describe(e) for e in parse_delivery(body, datetime.now(UTC)).events]
    return [describe(e) for e in _api_events(loaded, account)]


def _is_webhook_body(loaded: Mapping[str, Any]) -> bool:
    data = loaded.get("data")
    return bool("for_user_id" in loaded or NOTICES & loaded.keys()
                or (isinstance(data, Mapping) and "event_type" in data))


def _api_events(page: dict[str, Any], account: str) -> list[Event]:
    data = page.get("data")
    if data is None and isinstance(page.get("meta"), Mapping):
        return []  # an empty page: X leaves `data` out when nothing matched
    if isinstance(data, Mapping):
        page = {**page, "data": [data]}  # one object (a lookup by id)
    elif not isinstance(data, list):
        raise PayloadError("no X webhook events and no v2 `data` in this payload")
    items = payload.objects(page, "data", "data")
    if items and ("event_type" in items[0] or "sender_id" in items[0]):
        return list(read_page(page, parse_v2_dm, account, "dm_events"))
    return list(read_page(page, parse_v2_post, account, "posts"))


def describe(event: Event) -> dict[str, Any]:
    """Return the fields of DESIGN.md's inspect contract (ids as strings), and a few more."""
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
        "author_id": event.author.user_id, "author_known": event.author.is_known,
        "author_handle": event.author.handle,
        "text": event.text, "in_reply_to_id": event.in_reply_to_id,
        "conversation_id": event.conversation_id, "is_own": event.is_own,
        "account": event.account, "created_at": event.created_at.isoformat(),
        "expanded_urls": list(event.expanded_urls), "permalink": event.permalink,
        "language": event.language,
    }
