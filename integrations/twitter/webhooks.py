"""X webhooks, sans I/O: CRC answers, signature checks, and payloads → normalised events.

Two delivery formats arrive at the same URL:
- Account Activity API (v1.1 objects): `{"for_user_id": ..., "tweet_create_events": [...]}`
  https://docs.x.com/x-api/enterprise-gnip-2.0/fundamentals/account-activity
- X Activity API: `{"data": {"event_type": "...", "payload": {...}, ...}}`, carrying v2 post
  objects (and the Account Activity DM shape for DMs).
Both are signed the same way: `x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256 of
the raw body, keyed with the app's consumer secret>`; the CRC check answers with the same
HMAC over the `crc_token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from integrations import jsontext
from integrations.errors import PayloadError, VerificationError
from integrations.events import Deletion, Event, MessageKind, SocialMessage, SocialUser

CHANNEL = "x"
SIGNATURE_HEADER = "x-twitter-webhooks-signature"

# The Account Activity event keys deskbridge reads (posts, DMs, deletes). Everything else
# (favourites, follows, blocks, mutes, typing and read receipts, revokes, and whatever X adds
# tomorrow) is counted as unknown and ignored.
# https://docs.x.com/x-api/enterprise-gnip-2.0/fundamentals/account-activity#account-activity-data-objects-structure
ACCOUNT_ACTIVITY_EVENTS = frozenset({
    "tweet_create_events", "direct_message_events", "tweet_delete_events"})


# Bodies X also POSTs to the webhook that are about the app, not an account: a user revoking
# the app's access, and the outcome of a replay job. Acknowledged and ignored.
NOTICES = frozenset({"user_event", "replay_job_status"})


# ---------------------------------------------------------------- CRC and signatures

# What a CRC token X sends looks like. The docs say only "a crc_token parameter"
# (https://docs.x.com/x-api/webhooks/quickstart, "How the CRC works"); every recorded one is
# 48 characters of base64 (of a UUID), the same in 2017 and 2026, and the docs' own example
# is `challenge_string` (tests/payloads/x/crc/, SOURCES.md). Both base64 alphabets are
# allowed, padding only at the end, and the length leaves X room to grow its token.
CRC_TOKEN_MAX_LENGTH = 128
CRC_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}", re.ASCII)


class HeaderLookup(Protocol):
    """A request's headers: a plain mapping, or werkzeug's (case-insensitive) `Headers`."""

    def get(self, key: str, /) -> str | None: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


def sign(consumer_secret: str, body: bytes) -> str:
    """`sha256=` + base64 HMAC-SHA256: X's `x-twitter-webhooks-signature` of a body, and its
    CRC response token of a `crc_token`."""
    digest = hmac.new(consumer_secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def crc_response(consumer_secret: str, crc_token: str) -> dict[str, str]:
    """Return the body X expects in answer to its CRC challenge.

    Raises PayloadError for a token not shaped like X's (`check_crc_token`): the answer is
    the signature X would put on a POST whose body is the token, so answering any string
    would sign any delivery a forger asked for.
    """
    check_crc_token(crc_token)
    return {"response_token": sign(consumer_secret, crc_token.encode())}


def check_crc_token(crc_token: str) -> None:
    """Raise PayloadError unless `crc_token` is a short base64 string, as X sends.

    No JSON object can pass: the alphabet has none of `{` `}` `"` `:` `,` `[` `]` or
    whitespace, so no body `parse_delivery` accepts can be signed through the CRC.
    """
    if not crc_token:
        raise PayloadError("crc_token is required")
    if len(crc_token) > CRC_TOKEN_MAX_LENGTH:
        raise PayloadError(f"crc_token is longer than {CRC_TOKEN_MAX_LENGTH} characters, "
                           "which no X challenge is")
    if not CRC_TOKEN_SHAPE.fullmatch(crc_token):
        raise PayloadError("crc_token has characters outside base64 (A-Z a-z 0-9 + / - _ "
                           "and = padding), which no X challenge has")


def verify_signature(headers: HeaderLookup, body: bytes, secrets: Sequence[str]) -> str:
    """Which of the configured consumer secrets signed this raw body.

    Fails closed, in constant time per secret: raises VerificationError when there is no
    secret to check with, no signature, or no secret whose signature matches.
    """
    if not secrets:
        raise VerificationError("no X consumer secret is configured to verify this request")
    given = _header(headers, SIGNATURE_HEADER)
    if not given:
        raise VerificationError(f"missing {SIGNATURE_HEADER} header")
    matched = [s for s in secrets if hmac.compare_digest(sign(s, body).encode(), given.encode())]
    if not matched:
        raise VerificationError(f"{SIGNATURE_HEADER} does not match the body")
    return matched[0]


def _header(headers: HeaderLookup, name: str) -> str:
    # A request's own headers (werkzeug's) are found case-insensitively by `get`, without
    # copying them all; any other mapping is searched whatever its keys' case.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), "")
    return value


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Delivery:
    """What one webhook POST carried, for which subscribed account."""

    account_id: str | None
    events: tuple[Event, ...] = ()
    unknown: tuple[str, ...] = field(default_factory=tuple)  # event types we ignored


def load_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; raises PayloadError with the reason otherwise."""
    try:
        payload = jsontext.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PayloadError(f"body is not valid JSON: {err}") from err
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object")
    return payload


def parse_delivery(body: bytes, received_at: datetime) -> Delivery:
    """Normalise one webhook body of either format; raises PayloadError if it is neither.

    `received_at` dates events that carry no time of their own (X Activity API deletes).
    """
    payload = load_json(body)
    if "for_user_id" in payload:
        return parse_account_activity(payload)
    notices = sorted(NOTICES & payload.keys())
    if notices:  # about the app or a replay job, not an account's activity
        return Delivery(None, (), tuple(notices))
    if isinstance(payload.get("data"), Mapping) and "event_type" in payload["data"]:
        return parse_activity_event(payload, received_at)
    raise PayloadError("neither an Account Activity nor an X Activity API payload")


def parse_account_activity(payload: Mapping[str, Any]) -> Delivery:
    """Normalise an Account Activity API body (v1.1 objects)."""
    account = _id(payload.get("for_user_id"))
    if account is None:
        raise PayloadError("for_user_id is missing")
    events: list[Event] = []
    for tweet in _list(payload, "tweet_create_events"):
        events.append(parse_v1_tweet(tweet, account))
    users = payload.get("users") or {}
    for dm in _list(payload, "direct_message_events"):
        if dm.get("type") == "message_create":
            events.append(parse_v1_dm(dm, users, account))
    for deleted in _list(payload, "tweet_delete_events"):
        events.append(parse_v1_delete(deleted, account))
    unknown = tuple(sorted(k for k in payload if k.endswith("_events")
                           and k not in ACCOUNT_ACTIVITY_EVENTS))
    return Delivery(account, tuple(events), unknown)


def parse_v1_tweet(tweet: Mapping[str, Any], account: str) -> SocialMessage:
    """A v1.1 tweet object as a message; the full text even when X truncated it."""
    try:
        user = tweet["user"]
        message_id = _id(tweet.get("id_str") or tweet.get("id"))
        author = _v1_user(user)
    except (KeyError, TypeError) as err:
        raise PayloadError(f"tweet without {err}") from err
    if message_id is None:
        raise PayloadError("tweet without an id")
    extended = tweet.get("extended_tweet") or {}
    text = extended.get("full_text") or tweet.get("full_text") or tweet.get("text") or ""
    entities = extended.get("entities") or tweet.get("entities") or {}
    media = (extended.get("extended_entities") or tweet.get("extended_entities") or {})
    parent = _id(tweet.get("in_reply_to_status_id_str"))
    return SocialMessage(
        channel=CHANNEL, account=account, message_id=message_id, kind=_v1_kind(tweet),
        author=author, text=text, created_at=_v1_time(tweet),
        in_reply_to_id=parent, conversation_id=parent or message_id,
        expanded_urls=_expanded_urls(entities), media_urls=_media_urls(media),
        permalink=_permalink(author.handle, message_id),
        language=tweet.get("lang"), is_own=author.user_id == account, raw=tweet,
    )


def _v1_kind(tweet: Mapping[str, Any]) -> MessageKind:
    if tweet.get("retweeted_status"):
        return MessageKind.RETWEET
    if tweet.get("quoted_status") or tweet.get("is_quote_status"):
        return MessageKind.QUOTE
    if tweet.get("in_reply_to_status_id_str"):
        return MessageKind.REPLY
    return MessageKind.MENTION


def _v1_time(obj: Mapping[str, Any]) -> datetime:
    if obj.get("timestamp_ms"):
        return _from_ms(obj["timestamp_ms"])
    try:
        return datetime.strptime(obj["created_at"], "%a %b %d %H:%M:%S %z %Y")
    except (KeyError, ValueError, TypeError) as err:
        raise PayloadError(f"no readable created_at: {err}") from err


def _v1_user(user: Mapping[str, Any]) -> SocialUser:
    return _user(_req_id(user.get("id_str") or user.get("id"), "user id"),
                 user.get("screen_name") or "", user.get("name") or "",
                 user.get("followers_count"))


def _user(user_id: str, handle: str, name: str, followers: int | None) -> SocialUser:
    return SocialUser(channel=CHANNEL, user_id=user_id, handle=handle, display_name=name,
                      follower_count=followers,
                      profile_url=f"https://x.com/{handle}" if handle else None)


def _permalink(handle: str, post_id: str) -> str:
    # x.com/i/status/ID opens any post when the author's handle is not known.
    return f"https://x.com/{handle or 'i'}/status/{post_id}"


def parse_v1_dm(dm: Mapping[str, Any], users: Mapping[str, Any], account: str) -> SocialMessage:
    """An Account Activity `message_create` DM event as a message."""
    try:
        create = dm["message_create"]
        sender = _req_id(create["sender_id"], "sender_id")
        recipient = _req_id(create["target"]["recipient_id"], "recipient_id")
        data = create.get("message_data") or {}
    except (KeyError, TypeError) as err:
        raise PayloadError(f"DM event without {err}") from err
    author = any_user(users.get(sender), sender)
    return SocialMessage(
        channel=CHANNEL, account=account, message_id=_req_id(dm.get("id"), "DM id"),
        kind=MessageKind.DM, author=author, text=data.get("text") or "",
        created_at=_from_ms(dm.get("created_timestamp")),
        conversation_id=dm_conversation_id(sender, recipient),
        expanded_urls=_expanded_urls(data.get("entities") or {}),
        media_urls=_dm_media(data), is_own=sender == account, raw=dm,
    )


def parse_v1_delete(deleted: Mapping[str, Any], account: str) -> Deletion:
    """An Account Activity `tweet_delete_events` entry as a deletion."""
    status = deleted.get("status") or {}
    return Deletion(
        channel=CHANNEL, account=account, message_id=_req_id(status.get("id"), "status.id"),
        author_id=_req_id(status.get("user_id"), "status.user_id"),
        deleted_at=_from_ms(deleted.get("timestamp_ms")), raw=deleted,
    )


# ---------------------------------------------------------------- X Activity API

# X Activity API event types → what they carry. Anything else (likes, follows, profile
# changes, chat, oauth.revoke, and whatever X adds tomorrow) is unknown and ignored.
# https://docs.x.com/x-api/activity/introduction
ACTIVITY_EVENTS: dict[str, str] = {
    "post.create": "post",  # the subscribed account's own post
    "post.mention.create": "post",
    "post.reply.create": "post",
    "post.quote.create": "post",
    "post.repost.create": "post",
    "post.delete": "delete",
    "dm.received": "dm",
    "dm.sent": "dm",
}


def parse_activity_event(payload: Mapping[str, Any], received_at: datetime) -> Delivery:
    """Normalise one X Activity API delivery (`{"data": {"event_type": ...}}`)."""
    data = payload["data"]
    event_type = str(data.get("event_type"))
    account = _id((data.get("filter") or {}).get("user_id"))
    body = data.get("payload")
    carried = ACTIVITY_EVENTS.get(event_type)
    if carried is None:
        return Delivery(account, (), (event_type,))
    if account is None:
        raise PayloadError("filter.user_id (the subscribed account) is missing")
    if not isinstance(body, Mapping):
        raise PayloadError(f"{event_type} without a payload object")
    if carried == "dm":
        users = body.get("users") or {}
        dms = [d for d in _list(body, "direct_message_events") if d.get("type") == "message_create"]
        return Delivery(account, tuple(parse_v1_dm(d, users, account) for d in dms))
    if carried == "delete":
        return Delivery(account, (Deletion(
            channel=CHANNEL, account=account, message_id=_req_id(body.get("id"), "payload.id"),
            author_id=_req_id(body.get("author_id"), "payload.author_id"),
            deleted_at=received_at, raw=payload),))
    users = users_by_id(data.get("includes"))
    return Delivery(account, (parse_v2_post(body, users, account),))


# ---------------------------------------------------------------- v2 objects (polling, XAA)


def parse_v2_post(
    post: Mapping[str, Any], users: Mapping[str, Mapping[str, Any]], account: str,
) -> SocialMessage:
    """A v2 post object as a message, its author looked up in `includes.users` (by id)."""
    message_id = _req_id(post.get("id"), "post id")
    author_id = _req_id(post.get("author_id"), "author_id")
    author = any_user(users.get(author_id), author_id)
    note = post.get("note_tweet") or {}  # long posts: the full text is here
    references = {r.get("type"): _id(r.get("id")) for r in post.get("referenced_tweets") or []}
    return SocialMessage(
        channel=CHANNEL, account=account, message_id=message_id, kind=_v2_kind(references),
        author=author, text=note.get("text") or post.get("text") or "",
        created_at=_iso(post.get("created_at")),
        in_reply_to_id=references.get("replied_to"),
        conversation_id=_id(post.get("conversation_id")) or message_id,
        expanded_urls=_expanded_urls(note.get("entities") or post.get("entities") or {}),
        permalink=_permalink(author.handle, message_id),
        language=post.get("lang"), is_own=author_id == account, raw=post,
    )


def _v2_kind(references: Mapping[str | None, str | None]) -> MessageKind:
    if "retweeted" in references:
        return MessageKind.RETWEET
    if "quoted" in references:
        return MessageKind.QUOTE
    if "replied_to" in references:
        return MessageKind.REPLY
    return MessageKind.MENTION


def _v2_user(user: Mapping[str, Any], user_id: str) -> SocialUser:
    metrics = user.get("public_metrics") or {}
    return _user(user_id, user.get("username") or "", user.get("name") or "",
                 metrics.get("followers_count"))


def parse_v2_dm(
    event: Mapping[str, Any], users: Mapping[str, Mapping[str, Any]], account: str,
) -> SocialMessage:
    """A v2 `MessageCreate` DM event (GET /2/dm_events) as a message."""
    sender = _req_id(event.get("sender_id"), "sender_id")
    return SocialMessage(
        channel=CHANNEL, account=account, message_id=_req_id(event.get("id"), "DM event id"),
        kind=MessageKind.DM, author=any_user(users.get(sender), sender),
        text=event.get("text") or "", created_at=_iso(event.get("created_at")),
        conversation_id=_id(event.get("dm_conversation_id")),
        expanded_urls=_expanded_urls(event.get("entities") or {}),
        is_own=sender == account, raw=event,
    )


def users_by_id(includes: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """`includes.users` (a list, or an object keyed by id) as a dict keyed by id.

    The X Activity API sometimes wraps each user in `{"data": {...}}`; unwrapped here.
    """
    users = (includes or {}).get("users") or []
    if isinstance(users, Mapping):
        return {str(k): _unwrap(v) for k, v in users.items() if isinstance(v, Mapping)}
    unwrapped = [_unwrap(u) for u in users if isinstance(u, Mapping)]
    return {str(u["id"]): u for u in unwrapped if "id" in u}


def _unwrap(user: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = user.get("data")
    return inner if isinstance(inner, Mapping) and "id" not in user else user


def any_user(user: Mapping[str, Any] | None, user_id: str) -> SocialUser:
    """A user object of either API version (v1.1 `screen_name`, v2 `username`)."""
    if not user:
        return SocialUser(CHANNEL, user_id, "")
    user = _unwrap(user)
    return _v1_user(user) if "screen_name" in user else _v2_user(user, user_id)


# ---------------------------------------------------------------- small helpers


# X ids are snowflakes: milliseconds since X's epoch, shifted left 22 bits.
# https://docs.x.com/resources/fundamentals/x-ids
SNOWFLAKE_EPOCH_MS = 1288834974657


def snowflake_at(moment: datetime) -> str:
    """The smallest X id that could have been made at `moment` (a cursor "from now on")."""
    millis = int(moment.timestamp() * 1000) - SNOWFLAKE_EPOCH_MS
    return str(max(millis, 0) << 22)


def dm_conversation_id(a: str, b: str) -> str:
    """X's id of the one-to-one DM conversation between two users: "smaller-larger"."""
    low, high = sorted((a, b), key=int)
    return f"{low}-{high}"


def _expanded_urls(entities: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(u["expanded_url"] for u in entities.get("urls") or []
                 if isinstance(u, Mapping) and u.get("expanded_url"))


def _media_urls(extended_entities: Mapping[str, Any]) -> tuple[str, ...]:
    media = [m for m in extended_entities.get("media") or [] if isinstance(m, Mapping)]
    return tuple(str(url) for m in media if (url := m.get("media_url_https") or m.get("media_url")))


def _dm_media(data: Mapping[str, Any]) -> tuple[str, ...]:
    media = ((data.get("attachment") or {}).get("media")) or {}
    url = media.get("media_url_https") or media.get("media_url")
    return (url,) if url else ()


def _list(payload: Mapping[str, Any], key: str) -> Iterable[Mapping[str, Any]]:
    value = payload.get(key) or []
    if not isinstance(value, list):
        raise PayloadError(f"{key} is not a list")
    return [v for v in value if isinstance(v, Mapping)]


def _id(value: Any) -> str | None:
    # Ids exceed 2^53: they are only ever handled as strings of digits.
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"not an id: {value!r}")
    return str(value)


def _req_id(value: Any, what: str) -> str:
    result = _id(value)
    if result is None:
        raise PayloadError(f"{what} is missing")
    return result


def _from_ms(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (TypeError, ValueError) as err:
        raise PayloadError(f"not a millisecond timestamp: {value!r}") from err


def _iso(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as err:
        raise PayloadError(f"not an ISO 8601 time: {value!r}") from err
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
