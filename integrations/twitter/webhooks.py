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
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from integrations import payload
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
#
# Every field is read through `integrations.payload` (type, range and length checked) and
# named by its path in the body, so a refusal says which field did not fit. A field X only
# sends when asked for (a v2 post's `author_id` and `created_at` without `expansions` or
# `tweet.fields`) may be absent: the author is then unknown, the time read from the id.

MAX_HANDLE = 64  # X handles are at most 15 characters; bounded generously, never trusted
MAX_NAME = 256  # display names are at most 50 characters
MAX_SHORT = 64  # event types, languages, `created_at` strings
MAX_URL = 4_096
# Milliseconds since 1970 that a datetime can hold (up to 9999-12-31): a 400-digit
# `timestamp_ms` is a refused field, never an OverflowError.
MAX_MILLIS = 253_402_300_799_999


@dataclass(frozen=True)
class Delivery:
    """What one webhook POST carried, for which subscribed account."""

    account_id: str | None
    events: tuple[Event, ...] = ()
    unknown: tuple[str, ...] = field(default_factory=tuple)  # event types we ignored


def load_json(body: bytes) -> dict[str, Any]:
    """Return the body as a JSON object within bounds; raises PayloadError with the reason."""
    return payload.load_object(body)


def parse_delivery(body: bytes, received_at: datetime) -> Delivery:
    """Normalise one webhook body of either format; raises PayloadError if it is neither,
    or if any entry in it does not fit (a signed body is taken whole or refused whole).

    `received_at` dates events that carry no time of their own (X Activity API deletes).
    """
    delivery = load_json(body)
    if "for_user_id" in delivery:
        return parse_account_activity(delivery)
    notices = sorted(NOTICES & delivery.keys())
    if notices:  # about the app or a replay job, not an account's activity
        return Delivery(None, (), tuple(notices))
    data = payload.mapping(delivery, "data", "data")
    if "event_type" in data:
        return parse_activity_event(data, received_at)
    raise PayloadError("neither an Account Activity nor an X Activity API payload")


def parse_account_activity(delivery: Mapping[str, Any]) -> Delivery:
    """Normalise an Account Activity API body (v1.1 objects); raises PayloadError."""
    account = payload.required_digits(delivery.get("for_user_id"), "for_user_id")
    users = payload.mapping(delivery, "users", "users")
    events: list[Event] = []
    for where, tweet in _entries(delivery, "tweet_create_events"):
        events.append(parse_v1_tweet(tweet, account, where))
    for where, dm in _entries(delivery, "direct_message_events"):
        if _is_message_create(dm, where):
            events.append(parse_v1_dm(dm, users, account, where))
    for where, deleted in _entries(delivery, "tweet_delete_events"):
        events.append(parse_v1_delete(deleted, account, where))
    unknown = tuple(sorted(k for k in delivery if k.endswith("_events")
                           and k not in ACCOUNT_ACTIVITY_EVENTS))
    return Delivery(account, tuple(events), unknown)


def parse_v1_tweet(tweet: Mapping[str, Any], account: str, where: str = "tweet") -> SocialMessage:
    """Return a v1.1 tweet object as a message, with the full text even when X truncated it.

    Raises PayloadError naming the first field that does not fit.
    """
    message_id = _required_id(tweet, where, "id_str", "id")
    author = _v1_author(tweet, where)
    extended = payload.mapping(tweet, "extended_tweet", f"{where}.extended_tweet")
    entities = _first_mapping(where, "entities", (extended, "extended_tweet"), (tweet, ""))
    media = _first_mapping(where, "extended_entities", (extended, "extended_tweet"), (tweet, ""))
    parent = payload.digits(tweet.get("in_reply_to_status_id_str"),
                            f"{where}.in_reply_to_status_id_str")
    return SocialMessage(
        channel=CHANNEL, account=account, message_id=message_id, kind=_v1_kind(tweet, parent, where),
        author=author, text=_v1_text(tweet, extended, where),
        created_at=_v1_time(tweet, message_id, where),
        in_reply_to_id=parent, conversation_id=parent or message_id,
        expanded_urls=_expanded_urls(*entities), media_urls=_media_urls(*media),
        permalink=_permalink(author.handle, message_id),
        language=payload.optional_text(tweet.get("lang"), f"{where}.lang", max_chars=MAX_SHORT),
        is_own=author.is_known and author.user_id == account, raw=tweet,
    )


def _v1_author(tweet: Mapping[str, Any], where: str) -> SocialUser:
    user = payload.mapping(tweet, "user", f"{where}.user")
    return _v1_user(user, f"{where}.user") if user else unknown_user()


def _v1_text(tweet: Mapping[str, Any], extended: Mapping[str, Any], where: str) -> str:
    # X cuts `text` at 140 characters and puts the whole post in `extended_tweet.full_text`.
    # https://docs.x.com/x-api/enterprise-gnip-2.0/fundamentals/account-activity
    return (payload.text(extended.get("full_text"), f"{where}.extended_tweet.full_text")
            or payload.text(tweet.get("full_text"), f"{where}.full_text")
            or payload.text(tweet.get("text"), f"{where}.text"))


def _v1_kind(tweet: Mapping[str, Any], parent: str | None, where: str) -> MessageKind:
    if payload.mapping(tweet, "retweeted_status", f"{where}.retweeted_status"):
        return MessageKind.RETWEET
    quoted = payload.mapping(tweet, "quoted_status", f"{where}.quoted_status")
    if quoted or payload.boolean(tweet.get("is_quote_status"), f"{where}.is_quote_status"):
        return MessageKind.QUOTE
    if parent is not None:
        return MessageKind.REPLY
    return MessageKind.MENTION


def _v1_time(obj: Mapping[str, Any], message_id: str, where: str) -> datetime:
    if obj.get("timestamp_ms") not in (None, ""):
        return _from_ms(obj["timestamp_ms"], f"{where}.timestamp_ms")
    created = payload.optional_text(obj.get("created_at"), f"{where}.created_at",
                                    max_chars=MAX_SHORT)
    if created is None:
        return snowflake_time(message_id)
    try:
        return datetime.strptime(created, "%a %b %d %H:%M:%S %z %Y")
    except ValueError as err:
        raise PayloadError(f"{where}.created_at is not a v1.1 time: {created!r}") from err


def _v1_user(user: Mapping[str, Any], where: str) -> SocialUser:
    return _user(_required_id(user, where, "id_str", "id"),
                 payload.text(user.get("screen_name"), f"{where}.screen_name",
                              max_chars=MAX_HANDLE),
                 payload.text(user.get("name"), f"{where}.name", max_chars=MAX_NAME),
                 payload.integer(user.get("followers_count"), f"{where}.followers_count"))


def _user(user_id: str, handle: str, name: str, followers: int | None) -> SocialUser:
    return SocialUser(channel=CHANNEL, user_id=user_id, handle=handle, display_name=name,
                      follower_count=followers,
                      profile_url=f"https://x.com/{handle}" if handle else None)


def unknown_user() -> SocialUser:
    """Return the author of a post X sent without one (no `author_id` was asked for)."""
    return SocialUser(CHANNEL, "", "")


def _permalink(handle: str, post_id: str) -> str:
    # x.com/i/status/ID opens any post when the author's handle is not known.
    return f"https://x.com/{handle or 'i'}/status/{post_id}"


def _is_message_create(dm: Mapping[str, Any], where: str) -> bool:
    return payload.text(dm.get("type"), f"{where}.type", max_chars=MAX_SHORT) == "message_create"


def parse_v1_dm(dm: Mapping[str, Any], users: Mapping[str, Any], account: str,
                where: str = "direct_message_events[0]") -> SocialMessage:
    """Return an Account Activity `message_create` DM event as a message; raises PayloadError."""
    create = payload.mapping(dm, "message_create", f"{where}.message_create")
    sender = payload.required_digits(create.get("sender_id"),
                                     f"{where}.message_create.sender_id")
    target = payload.mapping(create, "target", f"{where}.message_create.target")
    recipient = payload.required_digits(target.get("recipient_id"),
                                        f"{where}.message_create.target.recipient_id")
    data = payload.mapping(create, "message_data", f"{where}.message_create.message_data")
    message_id = payload.required_digits(dm.get("id"), f"{where}.id")
    data_where = f"{where}.message_create.message_data"
    return SocialMessage(
        channel=CHANNEL, account=account, message_id=message_id, kind=MessageKind.DM,
        author=any_user(users.get(sender), sender, f"users.{sender}"),
        text=payload.text(data.get("text"), f"{data_where}.text"),
        created_at=_dm_time(dm, message_id, where),
        conversation_id=dm_conversation_id(sender, recipient),
        expanded_urls=_expanded_urls(payload.mapping(data, "entities", f"{data_where}.entities"),
                                     f"{data_where}.entities"),
        media_urls=_dm_media(data, data_where), is_own=sender == account, raw=dm,
    )


def _dm_time(dm: Mapping[str, Any], message_id: str, where: str) -> datetime:
    if dm.get("created_timestamp") in (None, ""):
        return snowflake_time(message_id)
    return _from_ms(dm["created_timestamp"], f"{where}.created_timestamp")


def parse_v1_delete(deleted: Mapping[str, Any], account: str,
                    where: str = "tweet_delete_events[0]") -> Deletion:
    """Return an Account Activity `tweet_delete_events` entry as a deletion."""
    status = payload.mapping(deleted, "status", f"{where}.status")
    return Deletion(
        channel=CHANNEL, account=account,
        message_id=payload.required_digits(status.get("id"), f"{where}.status.id"),
        author_id=payload.required_digits(status.get("user_id"), f"{where}.status.user_id"),
        deleted_at=_from_ms(deleted.get("timestamp_ms"), f"{where}.timestamp_ms"), raw=deleted,
    )


# ---------------------------------------------------------------- X Activity API


def parse_activity_event(data: Mapping[str, Any], received_at: datetime) -> Delivery:
    """Normalise one X Activity API delivery (its `data` object); raises PayloadError."""
    event_type = payload.text(data.get("event_type"), "data.event_type", max_chars=MAX_SHORT)
    filter_ = payload.mapping(data, "filter", "data.filter")
    account = payload.digits(filter_.get("user_id"), "data.filter.user_id")
    carried = ACTIVITY_EVENTS.get(event_type)
    if carried is None:
        return Delivery(account, (), (event_type,))
    if account is None:
        raise PayloadError("data.filter.user_id (the subscribed account) is missing")
    body = payload.mapping(data, "payload", "data.payload")
    if not body:
        raise PayloadError(f"data.payload of {event_type} is missing")
    if carried == "dm":
        return Delivery(account, _activity_dms(body, account))
    if carried == "delete":
        return Delivery(account, (_activity_delete(body, account, received_at, data),))
    users = users_by_id(payload.mapping(data, "includes", "data.includes"), "data.includes")
    return Delivery(account, (parse_v2_post(body, users, account, "data.payload"),))


def _activity_dms(body: Mapping[str, Any], account: str) -> tuple[SocialMessage, ...]:
    # XAA DMs come in the Account Activity shape, their users map holding v2 users.
    # https://docs.x.com/x-api/activity/event-payloads
    users = payload.mapping(body, "users", "data.payload.users")
    return tuple(parse_v1_dm(dm, users, account, where)
                 for where, dm in _entries(body, "direct_message_events", "data.payload")
                 if _is_message_create(dm, where))


def _activity_delete(body: Mapping[str, Any], account: str, received_at: datetime,
                     data: Mapping[str, Any]) -> Deletion:
    return Deletion(
        channel=CHANNEL, account=account,
        message_id=payload.required_digits(body.get("id"), "data.payload.id"),
        author_id=payload.required_digits(body.get("author_id"), "data.payload.author_id"),
        deleted_at=received_at, raw={"data": data})


# ---------------------------------------------------------------- v2 objects (polling, XAA)


def parse_v2_post(post: Mapping[str, Any], users: Mapping[str, Mapping[str, Any]],
                  account: str, where: str = "post") -> SocialMessage:
    """Return a v2 post object as a message, its author looked up in `includes.users`.

    A post without `author_id` (X leaves it out unless asked) has an unknown author; one
    without `created_at` is dated by its id. Raises PayloadError for a field that does not fit.
    """
    message_id = payload.required_digits(post.get("id"), f"{where}.id")
    author = _v2_author(post, users, where)
    note = payload.mapping(post, "note_tweet", f"{where}.note_tweet")  # long posts: full text
    references = _v2_references(post, where)
    entities = _first_mapping(where, "entities", (note, "note_tweet"), (post, ""))
    text = (payload.text(note.get("text"), f"{where}.note_tweet.text")
            or payload.text(post.get("text"), f"{where}.text"))
    return SocialMessage(
        channel=CHANNEL, account=account, message_id=message_id, kind=_v2_kind(references),
        author=author, text=text, created_at=_v2_time(post, message_id, where),
        in_reply_to_id=references.get("replied_to"),
        conversation_id=payload.digits(post.get("conversation_id"),
                                       f"{where}.conversation_id") or message_id,
        expanded_urls=_expanded_urls(*entities),
        permalink=_permalink(author.handle, message_id),
        language=payload.optional_text(post.get("lang"), f"{where}.lang", max_chars=MAX_SHORT),
        is_own=author.is_known and author.user_id == account, raw=post,
    )


def _v2_author(post: Mapping[str, Any], users: Mapping[str, Mapping[str, Any]],
               where: str) -> SocialUser:
    author_id = payload.digits(post.get("author_id"), f"{where}.author_id")
    if author_id is None:
        return unknown_user()
    return any_user(users.get(author_id), author_id, f"includes.users[{author_id}]")


def _v2_references(post: Mapping[str, Any], where: str) -> dict[str, str | None]:
    references: dict[str, str | None] = {}
    for index, ref in enumerate(payload.objects(post, "referenced_tweets",
                                                f"{where}.referenced_tweets")):
        at = f"{where}.referenced_tweets[{index}]"
        kind = payload.text(ref.get("type"), f"{at}.type", max_chars=MAX_SHORT)
        references[kind] = payload.digits(ref.get("id"), f"{at}.id")
    return references


def _v2_time(obj: Mapping[str, Any], message_id: str, where: str) -> datetime:
    created = payload.optional_text(obj.get("created_at"), f"{where}.created_at",
                                    max_chars=MAX_SHORT)
    return _iso(created, f"{where}.created_at") if created else snowflake_time(message_id)


def _v2_kind(references: Mapping[str, str | None]) -> MessageKind:
    if "retweeted" in references:
        return MessageKind.RETWEET
    if "quoted" in references:
        return MessageKind.QUOTE
    if "replied_to" in references:
        return MessageKind.REPLY
    return MessageKind.MENTION


def _v2_user(user: Mapping[str, Any], user_id: str, where: str) -> SocialUser:
    metrics = payload.mapping(user, "public_metrics", f"{where}.public_metrics")
    return _user(user_id,
                 payload.text(user.get("username"), f"{where}.username", max_chars=MAX_HANDLE),
                 payload.text(user.get("name"), f"{where}.name", max_chars=MAX_NAME),
                 payload.integer(metrics.get("followers_count"),
                                 f"{where}.public_metrics.followers_count"))


def parse_v2_dm(event: Mapping[str, Any], users: Mapping[str, Mapping[str, Any]],
                account: str, where: str = "dm_event") -> SocialMessage:
    """Return a v2 `MessageCreate` DM event (GET /2/dm_events) as a message.

    By default X sends only `id`, `text` and `event_type`: without `sender_id` the author is
    unknown, without `created_at` the time is read from the id. Raises PayloadError.
    """
    message_id = payload.required_digits(event.get("id"), f"{where}.id")
    sender = payload.digits(event.get("sender_id"), f"{where}.sender_id")
    author = (any_user(users.get(sender), sender, f"includes.users[{sender}]")
              if sender is not None else unknown_user())
    return SocialMessage(
        channel=CHANNEL, account=account, message_id=message_id, kind=MessageKind.DM,
        author=author, text=payload.text(event.get("text"), f"{where}.text"),
        created_at=_v2_time(event, message_id, where),
        conversation_id=_conversation_id(event.get("dm_conversation_id"),
                                         f"{where}.dm_conversation_id"),
        expanded_urls=_expanded_urls(
            payload.mapping(event, "entities", f"{where}.entities"), f"{where}.entities"),
        is_own=sender == account, raw=event,
    )


def users_by_id(includes: Mapping[str, Any], where: str = "includes",
                ) -> dict[str, Mapping[str, Any]]:
    """Return `includes.users` (a list, or an object keyed by id) as a dict keyed by id.

    The X Activity API sometimes wraps each user in `{"data": {...}}`; unwrapped here.
    Raises PayloadError when `users` or an entry in it is of the wrong type.
    """
    users = includes.get("users")
    if isinstance(users, Mapping):
        return {payload.required_digits(key, f"{where}.users key"):
                _unwrap(payload.mapping(users, key, f"{where}.users.{key}"), f"{where}.users")
                for key in users}
    by_id: dict[str, Mapping[str, Any]] = {}
    for index, entry in enumerate(payload.objects(includes, "users", f"{where}.users")):
        user = _unwrap(entry, f"{where}.users[{index}]")
        user_id = payload.digits(user.get("id"), f"{where}.users[{index}].id")
        if user_id is not None:
            by_id[user_id] = user
    return by_id


def _unwrap(user: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    if "id" in user:
        return user
    inner = payload.mapping(user, "data", f"{where}.data")
    return inner or user


def any_user(user: Any, user_id: str, where: str) -> SocialUser:
    """Return a user object of either API version (v1.1 `screen_name`, v2 `username`);
    only the id when X sent no object for it. Raises PayloadError for a field that does not fit.
    """
    if not user:
        return SocialUser(CHANNEL, user_id, "")
    if not isinstance(user, Mapping):
        raise PayloadError(f"{where} is not an object")
    user = _unwrap(user, where)
    return _v1_user(user, where) if "screen_name" in user else _v2_user(user, user_id, where)


# ---------------------------------------------------------------- small helpers


# X ids are snowflakes: milliseconds since X's epoch, shifted left 22 bits.
# https://docs.x.com/resources/fundamentals/x-ids
SNOWFLAKE_EPOCH_MS = 1288834974657


def snowflake_at(moment: datetime) -> str:
    """Return the smallest X id that could have been made at `moment` (a cursor "from now")."""
    millis = int(moment.timestamp() * 1000) - SNOWFLAKE_EPOCH_MS
    return str(max(millis, 0) << 22)


def snowflake_time(message_id: str) -> datetime:
    """Return the moment X made the id (to the millisecond): the time of a post or DM that
    came without `created_at`."""
    millis = (int(message_id) >> 22) + SNOWFLAKE_EPOCH_MS
    return datetime.fromtimestamp(millis / 1000, UTC)


def dm_conversation_id(a: str, b: str) -> str:
    """Return X's id of the one-to-one DM conversation between two users: "smaller-larger"."""
    low, high = sorted((a, b), key=int)
    return f"{low}-{high}"


def _conversation_id(value: Any, where: str) -> str | None:
    # One-to-one conversations are "id-id"; group conversations are one id.
    # https://docs.x.com/x-api/direct-messages/lookup/integrate
    raw = payload.optional_text(value, where, max_chars=2 * payload.MAX_ID_DIGITS + 1)
    if raw is None:
        return None
    parts = raw.split("-")
    if len(parts) > 2:
        raise PayloadError(f"{where} is not a DM conversation id: {raw[:41]!r}")
    return "-".join(payload.required_digits(part, where) for part in parts)


def _required_id(obj: Mapping[str, Any], where: str, *keys: str) -> str:
    # v1.1 objects carry an id twice: `id_str` exactly, `id` as a number some JSON readers
    # round (https://docs.x.com/resources/fundamentals/x-ids); the first one present wins.
    for key in keys:
        value = payload.digits(obj.get(key), f"{where}.{key}")
        if value is not None:
            return value
    raise PayloadError(f"{where}.{keys[0]} is missing")


def _first_mapping(where: str, key: str, *parents: tuple[Mapping[str, Any], str],
                   ) -> tuple[Mapping[str, Any], str]:
    """Return the first non-empty object at `key` among `parents`, with its path."""
    path = where
    for parent, at in parents:
        path = ".".join(p for p in (where, at, key) if p)
        found = payload.mapping(parent, key, path)
        if found:
            return found, path
    return {}, path


def _entries(parent: Mapping[str, Any], key: str,
             prefix: str = "") -> list[tuple[str, Mapping[str, Any]]]:
    where = f"{prefix}.{key}" if prefix else key
    return [(f"{where}[{i}]", item) for i, item in enumerate(payload.objects(parent, key, where))]


def _expanded_urls(entities: Mapping[str, Any], where: str) -> tuple[str, ...]:
    urls = payload.objects(entities, "urls", f"{where}.urls")
    found = (payload.optional_text(u.get("expanded_url"), f"{where}.urls[{i}].expanded_url",
                                   max_chars=MAX_URL) for i, u in enumerate(urls))
    return tuple(url for url in found if url)


def _media_urls(extended_entities: Mapping[str, Any], where: str) -> tuple[str, ...]:
    media = payload.objects(extended_entities, "media", f"{where}.media")
    return tuple(url for i, m in enumerate(media)
                 if (url := _media_url(m, f"{where}.media[{i}]")))


def _media_url(media: Mapping[str, Any], where: str) -> str | None:
    return (payload.optional_text(media.get("media_url_https"), f"{where}.media_url_https",
                                  max_chars=MAX_URL)
            or payload.optional_text(media.get("media_url"), f"{where}.media_url",
                                     max_chars=MAX_URL))


def _dm_media(data: Mapping[str, Any], where: str) -> tuple[str, ...]:
    attachment = payload.mapping(data, "attachment", f"{where}.attachment")
    media = payload.mapping(attachment, "media", f"{where}.attachment.media")
    url = _media_url(media, f"{where}.attachment.media")
    return (url,) if url else ()


def _from_ms(value: Any, where: str) -> datetime:
    # X sends these as strings of digits (Account Activity) or numbers; either is read.
    digits = payload.required_digits(value, where)
    millis = int(digits)
    if millis > MAX_MILLIS:
        raise PayloadError(f"{where} is out of range for a millisecond time")
    return datetime.fromtimestamp(millis / 1000, UTC)


def _iso(value: str, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise PayloadError(f"{where} is not an ISO 8601 time: {value!r}") from err
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
