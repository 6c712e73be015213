"""An EMULATOR of the part of X's API v2 that deskbridge calls, for tests and the demo.

This is not X. It is a small Flask app, served on loopback only, that answers the requests
deskbridge makes with X's own JSON shapes, status codes, error bodies and rate-limit headers,
so the real tweepy library can run against it. Every response says so in its `server` header
(`deskbridge-x-emulator`) and every log line says "X emulator". Production always talks
to X.

What it serves (each group cites the X documentation its shapes come from):
- users/me, the account's mentions timeline and any user's posts timeline;
- DM events, creating posts (replies) and sending DMs;
- the v2 webhooks and Account Activity subscription endpoints, with a real CRC check against
  the registered URL and signed deliveries;
- `x-rate-limit-*` headers on every answer, and 429s when a 15-minute window is spent.

The `/_emulator/...` routes (not X) let tests and the demo feed it mentions and DMs, read what
deskbridge posted, inject failures, count calls and push Account Activity events. The same
controls exist in Python on `XEmulator`.

Known simplifications, where X would differ:
- one account (the channel) authenticates as a user; other users exist only as authors;
- OAuth 1.0a signatures are checked (keys, token, HMAC-SHA1) but timestamps and nonces are not;
- webhook URLs may be plain http on loopback with a port, which X refuses;
- unknown `*.fields` and `expansions` values are ignored (X answers 400);
- `start_time`/`end_time` are ignored; pages carry `next_token` but no `previous_token`;
- a delivery goes to every valid webhook, subscribed or not (X sends only subscribed users').
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote, unquote, urlsplit

import requests
from flask import Flask, Response, request

from integrations.emulation import (
    JSON,
    LOOPBACK,
    Clock,
    control_body,
    loopback_session,
    serve_app,
)
from integrations.emulation import EmulatorRequestHandler as BaseRequestHandler
from integrations.twitter.settings import XChannelSettings
from integrations.twitter.text import MAX_WEIGHTED_LENGTH, weighted_length

log = logging.getLogger("deskbridge.x_emulator")

AuthKind = Literal["app", "user"]

SERVER_HEADER = "deskbridge-x-emulator"
# X answers auth problems as RFC 7807 documents (seen on real 401s:
# https://github.com/plhery/node-twitter-api-v2/issues/425).
PROBLEM_JSON = "application/problem+json"
INVALID_REQUEST = "https://api.twitter.com/2/problems/invalid-request"
UNSUPPORTED_AUTH = "https://api.twitter.com/2/problems/unsupported-authentication"
WINDOW_SECONDS = 15 * 60
# X puts the start of a long post in `text` and the whole of it in `note_tweet.text`; the cut
# was observed at 270 characters: https://github.com/xdevplatform/samples/issues/202
NOTE_PREVIEW_CHARS = 270
TCO_LENGTH = 23
# Snowflake ids: milliseconds since X's epoch, shifted past 22 bits of worker and sequence.
SNOWFLAKE_EPOCH_MS = 1288834974657
# tweepy signs the URL it was asked for (https://api.twitter.com/...) before client.py rebases
# it onto the emulator, so a signature is accepted for any of these hosts or the real one.
SIGNED_HOSTS = ("https://api.twitter.com", "https://api.x.com")


# ---------------------------------------------------------------------------------------------
# Signatures: the two small algorithms X's webhooks use.
# https://docs.x.com/x-api/webhooks/quickstart ("How to build the CRC response", "Signature
# verification"): sha256= + base64(HMAC-SHA256(key=consumer secret, message)).
# ---------------------------------------------------------------------------------------------

def crc_response_token(consumer_secret: str, crc_token: str) -> str:
    """The `response_token` a webhook must answer a CRC GET with: HMAC-SHA256 of the token."""
    digest = hmac.new(consumer_secret.encode(), crc_token.encode(), hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def sign_webhook_body(consumer_secret: str, body: bytes) -> str:
    """The `x-twitter-webhooks-signature` value for a delivery: HMAC-SHA256 of the raw body."""
    digest = hmac.new(consumer_secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


# ---------------------------------------------------------------------------------------------
# Routes: X's endpoint, who may call it, and its default limit per 15-minute window.
# Limits are X's per-user figures where it has one, else per-app:
# https://docs.x.com/x-api/fundamentals/rate-limits
# ---------------------------------------------------------------------------------------------

APP: frozenset[AuthKind] = frozenset({"app"})
USER: frozenset[AuthKind] = frozenset({"user"})
EITHER: frozenset[AuthKind] = frozenset({"app", "user"})


@dataclass(frozen=True)
class RouteSpec:
    """One X endpoint the emulator serves."""

    auth: frozenset[AuthKind]
    limit: int


ROUTES: Mapping[str, RouteSpec] = {
    "GET /2/users/me": RouteSpec(USER, 75),
    "GET /2/users/:id/mentions": RouteSpec(EITHER, 300),
    "GET /2/users/:id/tweets": RouteSpec(EITHER, 900),
    "GET /2/dm_events": RouteSpec(USER, 15),
    # https://docs.x.com/x-api/direct-messages/get-dm-events-for-a-dm-conversation
    "GET /2/dm_conversations/with/:participant_id/dm_events": RouteSpec(USER, 15),
    "POST /2/tweets": RouteSpec(USER, 100),
    "POST /2/dm_conversations/with/:participant_id/messages": RouteSpec(USER, 15),
    "GET /2/webhooks": RouteSpec(APP, 450),
    "POST /2/webhooks": RouteSpec(APP, 450),
    "PUT /2/webhooks/:webhook_id": RouteSpec(APP, 450),
    "DELETE /2/webhooks/:webhook_id": RouteSpec(APP, 450),
    # X's table gives no figures for the Account Activity endpoints; 500 is the emulator's.
    "POST /2/account_activity/webhooks/:webhook_id/subscriptions/all": RouteSpec(USER, 500),
    "GET /2/account_activity/webhooks/:webhook_id/subscriptions/all": RouteSpec(USER, 500),
    "GET /2/account_activity/webhooks/:webhook_id/subscriptions/all/list": RouteSpec(APP, 500),
    "DELETE /2/account_activity/webhooks/:webhook_id/subscriptions/:user_id/all":
        RouteSpec(APP, 500),
    "GET /2/account_activity/subscriptions/count": RouteSpec(APP, 500),
}

_AUTH_NAMES: Mapping[AuthKind, str] = {
    "app": "OAuth 2.0 Application-Only", "user": "OAuth 1.0a User Context"}


# ---------------------------------------------------------------------------------------------
# Requests, results and X's error bodies.
# https://docs.x.com/x-api/fundamentals/response-codes-and-errors
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Credentials:
    """The app's keys and the channel account's user tokens the emulator accepts."""

    consumer_key: str = "emulator-consumer-key"
    consumer_secret: str = "emulator-consumer-secret"
    access_token: str = "1500000000000000001-emulator-access-token"
    access_token_secret: str = "emulator-access-token-secret"
    bearer_token: str = "emulator-bearer-token"


@dataclass(frozen=True)
class XUser:
    """A user as X's v2 user object describes one."""

    id: str
    username: str
    name: str
    created_at: str = "2015-03-01T12:00:00.000Z"
    description: str = ""
    protected: bool = False
    verified: bool = False


@dataclass(frozen=True)
class ApiRequest:
    """One call to an X endpoint, already authenticated: what a handler needs and no more."""

    route: str
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    auth: AuthKind | None = None


@dataclass(frozen=True)
class ApiResult:
    """An answer in X's shape: status, JSON body, content type and extra headers."""

    status: int
    body: Mapping[str, Any]
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


class XApiError(Exception):
    """An X error answer, raised from deep inside a handler and returned as its result."""

    def __init__(self, result: ApiResult) -> None:
        super().__init__(f"{result.status} {result.body}")
        self.result = result


def problem(status: int, title: str, detail: str, type_: str = "about:blank",
            content_type: str = JSON) -> ApiResult:
    """X's problem document: title, detail, type, status."""
    return ApiResult(status, {"title": title, "detail": detail, "type": type_,
                              "status": status}, content_type)


def invalid_request(message: str, parameter: str | None = None,
                    value: str | None = None) -> ApiResult:
    """X's 400 for bad parameters: an `errors` list under the invalid-request problem."""
    error: dict[str, Any] = {"message": message}
    if parameter is not None:
        error = {"parameters": {parameter: [value or ""]}, "message": message}
    return ApiResult(400, {"errors": [error], "title": "Invalid Request",
                           "detail": "One or more parameters to your request was invalid.",
                           "type": INVALID_REQUEST})


def _unauthorized() -> ApiResult:
    return problem(401, "Unauthorized", "Unauthorized", content_type=PROBLEM_JSON)


def _unsupported_auth(used: AuthKind, allowed: frozenset[AuthKind]) -> ApiResult:
    # Wording (two spaces included) as X sends it, e.g. for /2/users/me with a bearer token.
    supported = ["OAuth 1.0a User Context", "OAuth 2.0 User Context"] if "user" in allowed \
        else ["OAuth 2.0 Application-Only"]
    detail = (f"Authenticating with {_AUTH_NAMES[used]} is forbidden for this endpoint.  "
              f"Supported authentication types are [{', '.join(supported)}].")
    return problem(403, "Unsupported Authentication", detail, UNSUPPORTED_AUTH, PROBLEM_JSON)


def _too_many_requests() -> ApiResult:
    # Body as X sends it: https://github.com/geduldig/TwitterAPI/issues/180
    return problem(429, "Too Many Requests", "Too Many Requests")


def _server_error(status: int) -> ApiResult:
    titles = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
              504: "Gateway Timeout"}
    return problem(status, titles[status], titles[status])


def _webhook_failure(reason: str, details: str) -> XApiError:
    # "Failures return a standard error object" with "<Reason>: <Details>" as the message:
    # https://github.com/xdevplatform/docs/blob/main/x-api/webhooks/Introduction.md
    return XApiError(invalid_request(f"{reason}: {details}"))


# ---------------------------------------------------------------------------------------------
# Authentication: a bearer token (app-only) or an OAuth 1.0a HMAC-SHA1 signature (user).
# https://docs.x.com/resources/fundamentals/authentication
# ---------------------------------------------------------------------------------------------

_OAUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')


def _percent(value: str) -> str:
    return quote(value, safe="")


def _base_string(method: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.lower()
    for scheme, port in (("http", ":80"), ("https", ":443")):
        if parts.scheme == scheme and netloc.endswith(port):
            netloc = netloc[: -len(port)]
    base_url = f"{parts.scheme.lower()}://{netloc}{parts.path}"
    pairs = sorted((_percent(k), _percent(v)) for k, v in params)
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    return "&".join((method.upper(), _percent(base_url), _percent(normalized)))


def verify_oauth1(authorization: str, method: str, urls: Sequence[str],
                  params: Sequence[tuple[str, str]], credentials: Credentials) -> bool:
    """Whether an `Authorization: OAuth ...` header is a valid signature by the channel account.

    The signature is checked against each of `urls` (the URL the client may have signed).
    """
    oauth = {k: unquote(v) for k, v in _OAUTH_PARAM.findall(authorization)}
    if (oauth.get("oauth_consumer_key") != credentials.consumer_key
            or oauth.get("oauth_token") != credentials.access_token
            or oauth.get("oauth_signature_method") != "HMAC-SHA1"):
        return False
    signed = [(k, v) for k, v in oauth.items() if k not in ("oauth_signature", "realm")]
    key = f"{_percent(credentials.consumer_secret)}&{_percent(credentials.access_token_secret)}"
    given = oauth.get("oauth_signature", "").encode()
    for url in urls:
        base = _base_string(method, url, [*signed, *params])
        expected = base64.b64encode(hmac.new(key.encode(), base.encode(), hashlib.sha1).digest())
        if hmac.compare_digest(expected, given):
            return True
    return False


def authenticate(authorization: str | None, method: str, urls: Sequence[str],
                 params: Sequence[tuple[str, str]], credentials: Credentials) -> AuthKind | None:
    """Who is calling: "app" for the bearer token, "user" for a valid OAuth 1.0a signature."""
    value = authorization or ""
    if value.startswith("Bearer "):
        token = value.removeprefix("Bearer ").encode()
        return "app" if hmac.compare_digest(token, credentials.bearer_token.encode()) else None
    if value.startswith("OAuth "):
        return "user" if verify_oauth1(value, method, urls, params, credentials) else None
    return None


# ---------------------------------------------------------------------------------------------
# Post text: t.co links, entities, weighted length and long posts.
# https://docs.x.com/x-api/fundamentals/data-dictionary (entities, note_tweet)
# ---------------------------------------------------------------------------------------------

_URL = re.compile(r"https?://\S+")
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_]{1,15})")
_HASHTAG = re.compile(r"(?<![\w#])#(\w+)")
_TRAILING = ".,;:!?)]}'\""


def _tco(url: str, salt: str) -> str:
    digest = hashlib.sha256(f"{salt}\0{url}".encode()).digest()
    code = base64.b32encode(digest).decode().lower()[: TCO_LENGTH - len("https://t.co/")]
    return "https://t.co/" + code


def _display_url(url: str) -> str:
    bare = re.sub(r"^https?://(www\.)?", "", url)
    return bare if len(bare) <= 26 else bare[:25] + "…"


def _wrap_links(text: str, salt: str) -> tuple[str, list[dict[str, Any]]]:
    """The text with each URL replaced by a t.co link, and X's `urls` entities for them."""
    out, urls, last = [], [], 0
    for match in _URL.finditer(text):
        url = match.group().rstrip(_TRAILING)
        out.append(text[last:match.start()])
        start = sum(map(len, out))
        short = _tco(url, salt)
        out.append(short)
        urls.append({"start": start, "end": start + len(short), "url": short,
                     "expanded_url": url, "display_url": _display_url(url)})
        last = match.start() + len(url)
    out.append(text[last:])
    return "".join(out), urls


def _entities(text: str, urls: list[dict[str, Any]],
              users_by_name: Mapping[str, XUser]) -> dict[str, Any]:
    """X's `entities` for an already-wrapped text: urls, mentions and hashtags, if any."""
    mentions = []
    for match in _MENTION.finditer(text):
        entity: dict[str, Any] = {"start": match.start(), "end": match.end(),
                                  "username": match.group(1)}
        known = users_by_name.get(match.group(1).lower())
        if known is not None:
            entity["id"] = known.id
        mentions.append(entity)
    hashtags = [{"start": m.start(), "end": m.end(), "tag": m.group(1)}
                for m in _HASHTAG.finditer(text)]
    found = {"urls": urls, "mentions": mentions, "hashtags": hashtags}
    return {name: items for name, items in found.items() if items}


def _preview(entities: Mapping[str, Any], length: int) -> dict[str, Any]:
    kept = {name: [e for e in items if e["end"] <= length] for name, items in entities.items()}
    return {name: items for name, items in kept.items() if items}


# ---------------------------------------------------------------------------------------------
# Stored objects and their rendering with X's field selection.
# https://docs.x.com/x-api/fundamentals/fields, https://docs.x.com/x-api/fundamentals/expansions
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Post:
    id: str
    author_id: str
    text: str
    source_text: str
    created_at: str
    conversation_id: str
    entities: Mapping[str, Any]
    in_reply_to_user_id: str | None = None
    replied_to: str | None = None
    note: Mapping[str, Any] | None = None
    is_mention: bool = False


@dataclass(frozen=True)
class _DmEvent:
    id: str
    text: str
    sender_id: str
    dm_conversation_id: str
    created_at: str
    entities: Mapping[str, Any]


@dataclass
class _Webhook:
    id: str
    url: str
    created_at: str
    valid: bool = True
    subscribers: list[str] = field(default_factory=list)


_DEFAULT_USER_FIELDS = ("id", "name", "username")


def render_user(user: XUser, fields: Iterable[str] = ()) -> dict[str, Any]:
    """A v2 user object with the default fields and the requested `user.fields`."""
    wanted = set(_DEFAULT_USER_FIELDS) | set(fields)
    every = {"id": user.id, "name": user.name, "username": user.username,
             "created_at": user.created_at, "description": user.description,
             "protected": user.protected, "verified": user.verified}
    return {k: v for k, v in every.items() if k in wanted}


def _post_fields(post: _Post) -> dict[str, Any]:
    every: dict[str, Any] = {
        "author_id": post.author_id, "created_at": post.created_at,
        "conversation_id": post.conversation_id, "entities": dict(post.entities) or None,
        "in_reply_to_user_id": post.in_reply_to_user_id,
        "referenced_tweets": [{"type": "replied_to", "id": post.replied_to}]
        if post.replied_to else None,
        "note_tweet": dict(post.note) if post.note else None,
    }
    return {k: v for k, v in every.items() if v is not None}


def render_post(post: _Post, fields: Iterable[str] = ()) -> dict[str, Any]:
    """A v2 post object: id, text and edit_history_tweet_ids, plus the requested fields."""
    optional = _post_fields(post)
    body = {"id": post.id, "text": post.text, "edit_history_tweet_ids": [post.id]}
    body.update({k: optional[k] for k in fields if k in optional})
    return body


def render_dm_event(event: _DmEvent, fields: Iterable[str] = ()) -> dict[str, Any]:
    """A v2 DM event: id, event_type and text, plus the requested `dm_event.fields`.

    https://docs.x.com/x-api/direct-messages/lookup/integrate (default fields, examples)
    """
    every: dict[str, Any] = {"sender_id": event.sender_id, "created_at": event.created_at,
                             "dm_conversation_id": event.dm_conversation_id,
                             "entities": dict(event.entities) or None}
    body = {"id": event.id, "event_type": "MessageCreate", "text": event.text}
    body.update({k: every[k] for k in fields if every.get(k) is not None})
    return body


# ---------------------------------------------------------------------------------------------
# Query parameters, checked the way X checks them.
# ---------------------------------------------------------------------------------------------

_ID = re.compile(r"[0-9]{1,19}")


def _csv(query: Mapping[str, str], name: str) -> list[str]:
    return [item for item in query.get(name, "").split(",") if item]


def _id_value(value: str, name: str) -> int:
    if not _ID.fullmatch(value):
        raise XApiError(invalid_request(
            f"The `{name}` query parameter value [{value}] does not match ^[0-9]{{1,19}}$",
            name, value))
    return int(value)


def _optional_id(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    return None if value is None else _id_value(value, name)


def _max_results(query: Mapping[str, str], default: int, low: int, high: int) -> int:
    raw = query.get("max_results")
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        # Message as X words it, e.g. "... value [1] is not between 5 and 100".
        raise XApiError(invalid_request(
            f"The `max_results` query parameter value [{raw}] is not between {low} and {high}",
            "max_results", raw))
    return int(raw)


def _page_token(item_id: int) -> str:
    digits, value = "", item_id
    while value:
        value, rest = divmod(value, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[rest] + digits
    return "7140" + (digits or "0")


def _page_bound(query: Mapping[str, str]) -> int | None:
    token = query.get("pagination_token")
    if token is None:
        return None
    try:
        if not token.startswith("7140"):
            raise ValueError(token)
        return int(token[4:], 36)
    except ValueError:
        raise XApiError(invalid_request(
            f"The `pagination_token` query parameter value [{token}] is not valid",
            "pagination_token", token)) from None


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


_T = TypeVar("_T", bound=_HasId)


def _newest_first(items: Iterable[_T], query: Mapping[str, str],
                  limit: int) -> tuple[list[_T], str | None]:
    """One page of `items`, newest first, within since_id/until_id; and the next page's token."""
    since, until = _optional_id(query, "since_id"), _optional_id(query, "until_id")
    before = _page_bound(query)
    chosen = [item for item in sorted(items, key=lambda i: int(i.id), reverse=True)
              if (since is None or int(item.id) > since)
              and (until is None or int(item.id) < until)
              and (before is None or int(item.id) < before)]
    page = chosen[:limit]
    token = _page_token(int(page[-1].id)) if len(chosen) > limit else None
    return page, token


def _json_body(req: ApiRequest) -> dict[str, Any]:
    try:
        body = json.loads(req.body or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise XApiError(invalid_request("Request body is not valid JSON."))
    return body


# ---------------------------------------------------------------------------------------------
# Rate limits and injected failures.
# Headers on every answer: https://docs.x.com/x-api/fundamentals/rate-limits
# ---------------------------------------------------------------------------------------------

@dataclass
class _Window:
    limit: int
    reset_at: float = 0.0
    used: int = 0

    def take(self, now: float) -> bool:
        """Count one call in the current window; False when the window is spent."""
        if now >= self.reset_at:
            self.reset_at, self.used = now + WINDOW_SECONDS, 0
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def headers(self, remaining: int | None = None, reset_at: float | None = None
                ) -> dict[str, str]:
        """The three `x-rate-limit-*` headers X sends."""
        left = max(self.limit - self.used, 0) if remaining is None else remaining
        return {"x-rate-limit-limit": str(self.limit), "x-rate-limit-remaining": str(left),
                "x-rate-limit-reset": str(math.ceil(self.reset_at if reset_at is None
                                                    else reset_at))}


@dataclass
class _Failure:
    count: int
    status: int
    reset_after: float


# ---------------------------------------------------------------------------------------------
# The emulator's state and X's endpoints as plain methods.
# ---------------------------------------------------------------------------------------------

DEFAULT_ACCOUNT = XUser(id="1500000000000000001", username="deskbridge_demo",
                        name="Deskbridge Demo")
_FAILURE_STATUSES = (429, 500, 502, 503, 504)


class XEmulator:
    """The emulated X: one account, its mentions, DMs, posts and webhooks (thread-safe)."""

    def __init__(self, *, account: XUser = DEFAULT_ACCOUNT,
                 credentials: Credentials | None = None, clock: Clock = time.time,
                 rate_limits: Mapping[str, int] | None = None, max_webhooks: int = 1,
                 crc_timeout: float = 3.0, delivery_timeout: float = 10.0) -> None:
        self.account = account
        self.credentials = credentials or Credentials()
        self.clock = clock
        self.max_webhooks = max_webhooks
        self.crc_timeout = crc_timeout
        self.delivery_timeout = delivery_timeout
        self._lock = threading.RLock()
        self._users: dict[str, XUser] = {account.id: account}
        self._posts: dict[str, _Post] = {}
        self._dms: dict[str, _DmEvent] = {}
        self._webhooks: dict[str, _Webhook] = {}
        self._posted: list[dict[str, Any]] = []
        self._calls: Counter[str] = Counter()
        self._failures: dict[str, _Failure] = {}
        limits = {key: spec.limit for key, spec in ROUTES.items()} | dict(rate_limits or {})
        self._windows = {key: _Window(limits[key]) for key in ROUTES}
        self._last_id = 0
        self._http = loopback_session()
        self._handlers = self._handler_table()

    def _handler_table(self) -> dict[str, Callable[[ApiRequest], ApiResult]]:
        table: dict[str, Callable[[ApiRequest], ApiResult]] = {
            "GET /2/users/me": self._get_me,
            "GET /2/users/:id/mentions": self._get_mentions,
            "GET /2/users/:id/tweets": self._get_user_posts,
            "GET /2/dm_events": self._get_dm_events,
            "GET /2/dm_conversations/with/:participant_id/dm_events":
                self._get_conversation_dm_events,
            "POST /2/tweets": self._create_post,
            "POST /2/dm_conversations/with/:participant_id/messages": self._send_dm,
            "GET /2/webhooks": self._list_webhooks,
            "POST /2/webhooks": self._create_webhook,
            "PUT /2/webhooks/:webhook_id": self._validate_webhook,
            "DELETE /2/webhooks/:webhook_id": self._delete_webhook,
            "POST /2/account_activity/webhooks/:webhook_id/subscriptions/all": self._subscribe,
            "GET /2/account_activity/webhooks/:webhook_id/subscriptions/all":
                self._check_subscription,
            "GET /2/account_activity/webhooks/:webhook_id/subscriptions/all/list":
                self._list_subscriptions,
            "DELETE /2/account_activity/webhooks/:webhook_id/subscriptions/:user_id/all":
                self._unsubscribe,
            "GET /2/account_activity/subscriptions/count": self._count_subscriptions,
        }
        assert table.keys() == ROUTES.keys()
        return table

    # -- ids and time --------------------------------------------------------------------------

    def _new_id(self) -> str:
        """A 19-digit snowflake-like id from the clock, always greater than the last one."""
        with self._lock:
            millis = max(int(self.clock() * 1000) - SNOWFLAKE_EPOCH_MS, 0)
            self._last_id = max(millis << 22, self._last_id + 1)
            return str(self._last_id)

    def _now_iso(self) -> str:
        moment = datetime.fromtimestamp(self.clock(), UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    def _shape(self, text: str, salt: str) -> tuple[str, dict[str, Any]]:
        wrapped, urls = _wrap_links(text, salt)
        by_name = {u.username.lower(): u for u in self._users.values()}
        return wrapped, _entities(wrapped, urls, by_name)

    # -- the API: dispatch -----------------------------------------------------------------------

    def handle(self, req: ApiRequest) -> ApiResult:
        """Answer one authenticated call as X would: auth, failures, rate limit, then the work."""
        spec = ROUTES[req.route]
        with self._lock:
            self._calls[req.route] += 1
        if req.auth is None:
            return _unauthorized()
        if req.auth not in spec.auth:
            return _unsupported_auth(req.auth, spec.auth)
        refusal, headers = self._admit(req.route)
        if refusal is not None:
            return replace(refusal, headers=headers)
        try:
            result = self._handlers[req.route](req)
        except XApiError as err:
            result = err.result
        log.debug("X emulator: %s -> %s", req.route, result.status,
                  extra={"endpoint": req.route, "status": result.status})
        return replace(result, headers={**headers, **result.headers})

    def _admit(self, route: str) -> tuple[ApiResult | None, dict[str, str]]:
        """An injected failure or a spent window's 429 (or None), and the rate-limit headers."""
        with self._lock:
            now, window = self.clock(), self._windows[route]
            failure = self._failures.get(route)
            if failure is not None and failure.count > 0:
                failure.count -= 1
                if failure.status == 429:
                    return _too_many_requests(), window.headers(0, now + failure.reset_after)
                return _server_error(failure.status), {}
            if not window.take(now):
                log.info("X emulator: rate limit spent for %s", route, extra={"endpoint": route})
                return _too_many_requests(), window.headers()
            return None, window.headers()

    # -- users and timelines: https://docs.x.com/x-api/users/get-my-user,
    #    https://docs.x.com/x-api/posts/timelines/integrate (fields, meta, pagination) ---------

    def _get_me(self, req: ApiRequest) -> ApiResult:
        return ApiResult(200, {"data": render_user(self.account, _csv(req.query, "user.fields"))})

    def _get_mentions(self, req: ApiRequest) -> ApiResult:
        user_id = str(_id_value(req.path_params["id"], "id"))
        limit = _max_results(req.query, 10, 5, 100)
        with self._lock:
            posts = [p for p in self._posts.values()
                     if p.is_mention and user_id == self.account.id]
            page, token = _newest_first(posts, req.query, limit)
            return ApiResult(200, self._timeline(page, token, req.query))

    def _get_user_posts(self, req: ApiRequest) -> ApiResult:
        user_id = str(_id_value(req.path_params["id"], "id"))
        limit = _max_results(req.query, 10, 5, 100)
        skip_replies = "replies" in _csv(req.query, "exclude")
        with self._lock:
            posts = [p for p in self._posts.values() if p.author_id == user_id
                     and not (skip_replies and p.replied_to)]
            page, token = _newest_first(posts, req.query, limit)
            return ApiResult(200, self._timeline(page, token, req.query))

    def _timeline(self, page: list[_Post], token: str | None,
                  query: Mapping[str, str]) -> dict[str, Any]:
        if not page:
            return {"meta": {"result_count": 0}}
        fields = _csv(query, "tweet.fields")
        body: dict[str, Any] = {"data": [render_post(p, fields) for p in page]}
        includes = self._post_includes(page, _csv(query, "expansions"), query)
        if includes:
            body["includes"] = includes
        meta = {"newest_id": page[0].id, "oldest_id": page[-1].id, "result_count": len(page)}
        body["meta"] = meta | ({"next_token": token} if token else {})
        return body

    def _post_includes(self, page: list[_Post], expansions: list[str],
                       query: Mapping[str, str]) -> dict[str, Any]:
        referenced = [self._posts[p.replied_to] for p in page
                      if "referenced_tweets.id" in expansions and p.replied_to in self._posts]
        user_ids = [uid for p in page for uid in self._expanded_users(p, expansions)]
        user_ids += [r.author_id for r in referenced
                     if "referenced_tweets.id.author_id" in expansions]
        users = [self._users[uid] for uid in dict.fromkeys(user_ids) if uid in self._users]
        includes: dict[str, Any] = {}
        if users:
            includes["users"] = [render_user(u, _csv(query, "user.fields")) for u in users]
        if referenced:
            fields = _csv(query, "tweet.fields")
            unique = {r.id: r for r in referenced}.values()
            includes["tweets"] = [render_post(r, fields) for r in unique]
        return includes

    def _expanded_users(self, post: _Post, expansions: list[str]) -> list[str]:
        ids = [post.author_id] if "author_id" in expansions else []
        if "in_reply_to_user_id" in expansions and post.in_reply_to_user_id:
            ids.append(post.in_reply_to_user_id)
        if "entities.mentions.username" in expansions:
            ids += [m["id"] for m in post.entities.get("mentions", []) if "id" in m]
        return ids

    # -- DMs: https://docs.x.com/x-api/direct-messages/lookup/integrate,
    #    https://docs.x.com/x-api/direct-messages/manage/integrate ------------------------------

    def _get_conversation_dm_events(self, req: ApiRequest) -> ApiResult:
        participant = str(_id_value(req.path_params["participant_id"], "participant_id"))
        low, high = sorted((self.account.id, participant), key=int)
        return self._get_dm_events(req, conversation=f"{low}-{high}")

    def _get_dm_events(self, req: ApiRequest, conversation: str | None = None) -> ApiResult:
        limit = _max_results(req.query, 100, 1, 100)
        types = _csv(req.query, "event_types")
        with self._lock:
            events = [e for e in self._dms.values()
                      if conversation in (None, e.dm_conversation_id)]
            events = events if not types or "MessageCreate" in types else []
            page, token = _newest_first(events, req.query, limit)
            if not page:
                return ApiResult(200, {"meta": {"result_count": 0}})
            fields = _csv(req.query, "dm_event.fields")
            body: dict[str, Any] = {"data": [render_dm_event(e, fields) for e in page]}
            if "sender_id" in _csv(req.query, "expansions"):
                senders = dict.fromkeys(e.sender_id for e in page)
                body["includes"] = {"users": [render_user(self._users[s], _csv(
                    req.query, "user.fields")) for s in senders if s in self._users]}
            meta: dict[str, Any] = {"result_count": len(page)}
            body["meta"] = meta | ({"next_token": token} if token else {})
            return ApiResult(200, body)

    def _send_dm(self, req: ApiRequest) -> ApiResult:
        participant = str(_id_value(req.path_params["participant_id"], "participant_id"))
        text = _json_body(req).get("text")
        if not isinstance(text, str) or not text:
            raise XApiError(invalid_request("The `text` field is required.", "text", ""))
        event = self._store_dm(self.account.id, participant, text)
        with self._lock:
            self._posted.append({"kind": "dm", "dm_event_id": event.id,
                                 "dm_conversation_id": event.dm_conversation_id,
                                 "participant_id": participant, "text": text,
                                 "created_at": event.created_at})
        log.info("X emulator: sent DM %s", event.id, extra={"participant_id": participant})
        # X's Location quotes the id (recorded: tests/payloads/x/api, 2022-10-28).
        return ApiResult(201, {"data": {"dm_conversation_id": event.dm_conversation_id,
                                        "dm_event_id": event.id}},
                         headers={"location": f'{SIGNED_HOSTS[0]}/2/dm_events/"{event.id}"'})

    def _store_dm(self, sender_id: str, other_id: str, text: str) -> _DmEvent:
        # One-to-one conversation ids are "{smaller user id}-{larger user id}".
        low, high = sorted((sender_id, other_id), key=int)
        with self._lock:
            event_id = self._new_id()
            shown, entities = self._shape(text, event_id)
            event = _DmEvent(event_id, shown, sender_id, f"{low}-{high}", self._now_iso(),
                             entities)
            self._dms[event.id] = event
            return event

    # -- posts: https://docs.x.com/x-api/posts/create-post ---------------------------------------

    def _create_post(self, req: ApiRequest) -> ApiResult:
        body = _json_body(req)
        text = body.get("text")
        reply = body.get("reply") if isinstance(body.get("reply"), dict) else {}
        parent = reply.get("in_reply_to_tweet_id") if reply else None
        if not isinstance(text, str) or not text.strip():
            raise XApiError(invalid_request("The `text` field is required.", "text", ""))
        if weighted_length(text) > MAX_WEIGHTED_LENGTH:
            # 400 with this message: https://github.com/PLhery/node-twitter-api-v2 users report
            # e.data.errors[0].message; tweepy shows "400 Bad Request Your Tweet text is too long."
            raise XApiError(invalid_request(
                "Your Tweet text is too long. For more information on how Twitter determines "
                "text length see https://github.com/twitter/twitter-text."))
        post = self._store_own_post(text, str(parent) if parent is not None else None)
        return ApiResult(201, {"data": render_post(post)},
                         headers={"location": f"{SIGNED_HOSTS[0]}/2/tweets/{post.id}"})

    def _store_own_post(self, text: str, parent_id: str | None) -> _Post:
        with self._lock:
            if any(p.author_id == self.account.id and p.source_text == text
                   for p in self._posts.values()):
                # https://github.com/akrherz/iembot/issues/163 (a real 403 body)
                raise XApiError(problem(403, "Forbidden", "You are not allowed to create a "
                                        "Tweet with duplicate content."))
            post = self._new_post(self.account.id, text, parent_id, is_mention=False)
            self._posted.append({"kind": "tweet", "id": post.id, "text": post.text,
                                 "in_reply_to_tweet_id": parent_id,
                                 "created_at": post.created_at})
        log.info("X emulator: posted %s", post.id, extra={"in_reply_to": parent_id})
        return post

    def _new_post(self, author_id: str, text: str, parent_id: str | None,
                  *, is_mention: bool) -> _Post:
        post_id = self._new_id()
        shown, entities = self._shape(text, post_id)
        note = None
        if weighted_length(text) > MAX_WEIGHTED_LENGTH:
            note = {"text": shown, "entities": entities} if entities else {"text": shown}
            shown, entities = shown[:NOTE_PREVIEW_CHARS], _preview(entities, NOTE_PREVIEW_CHARS)
        parent = self._posts.get(parent_id) if parent_id else None
        post = _Post(post_id, author_id, shown, text, self._now_iso(),
                     parent.conversation_id if parent else (parent_id or post_id), entities,
                     in_reply_to_user_id=parent.author_id if parent else None,
                     replied_to=parent_id, note=note, is_mention=is_mention)
        self._posts[post.id] = post
        return post

    # -- webhooks: https://docs.x.com/x-api/webhooks/quickstart,
    #    https://docs.x.com/x-api/webhooks/introduction (CRC, validity) ------------------------

    def _list_webhooks(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            data = [self._render_webhook(w) for w in self._webhooks.values()]
        return ApiResult(200, {"data": data, "meta": {"result_count": len(data)}})

    @staticmethod
    def _render_webhook(hook: _Webhook) -> dict[str, Any]:
        return {"created_at": hook.created_at, "id": hook.id, "url": hook.url,
                "valid": hook.valid}

    def _create_webhook(self, req: ApiRequest) -> ApiResult:
        url = _json_body(req).get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
                or not urlsplit(url).hostname:
            raise _webhook_failure("UrlValidationFailed", f"Invalid URL: {url}")
        self._check_room_for(url)
        self._run_crc(url)
        with self._lock:
            self._check_room_for(url)
            hook = _Webhook(self._new_id(), url, self._now_iso())
            self._webhooks[hook.id] = hook
        log.info("X emulator: registered webhook %s", hook.id, extra={"url": url})
        return ApiResult(200, {"data": self._render_webhook(hook)})

    def _check_room_for(self, url: str) -> None:
        with self._lock:
            if any(w.url == url for w in self._webhooks.values()):
                raise _webhook_failure("DuplicateUrlFailed", f"{url} is already registered")
            if len(self._webhooks) >= self.max_webhooks:
                raise _webhook_failure("WebhookLimitExceeded", "Too many webhooks for this "
                                       f"application (limit {self.max_webhooks})")

    def _run_crc(self, url: str) -> None:
        """GET url?crc_token=... and require the right response_token (no lock held)."""
        token = secrets.token_urlsafe(24)
        try:
            answer = self._http.get(url, params={"crc_token": token}, timeout=self.crc_timeout)
            given = answer.json().get("response_token") if answer.ok else None
        except (requests.RequestException, ValueError, AttributeError) as err:
            raise _webhook_failure("CrcValidationFailed", f"CRC request failed: {err}") from None
        if not answer.ok:
            raise _webhook_failure("CrcValidationFailed", f"HTTP {answer.status_code}")
        expected = crc_response_token(self.credentials.consumer_secret, token)
        if not isinstance(given, str) or not hmac.compare_digest(given, expected):
            raise _webhook_failure("CrcValidationFailed", "Invalid response_token")

    def _webhook(self, req: ApiRequest) -> _Webhook:
        hook = self._webhooks.get(req.path_params["webhook_id"])
        if hook is None:
            raise _webhook_failure("WebhookIdInvalid",
                                   f"No webhook {req.path_params['webhook_id']} for this app")
        return hook

    def _validate_webhook(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            hook = self._webhook(req)
        try:
            self._run_crc(hook.url)
        except XApiError:
            with self._lock:
                hook.valid = False
            raise
        with self._lock:
            hook.valid = True
        return ApiResult(200, {"data": {"valid": True}})

    def _delete_webhook(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            del self._webhooks[self._webhook(req).id]
        return ApiResult(200, {"data": {"deleted": True}})

    # -- Account Activity subscriptions: https://docs.x.com/x-api/account-activity/quickstart --

    def _subscribe(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            hook = self._webhook(req)
            if self.account.id in hook.subscribers:
                raise _webhook_failure("DuplicateSubscriptionFailed",
                                       f"{self.account.id} is already subscribed")
            hook.subscribers.append(self.account.id)
        return ApiResult(200, {"data": {"subscribed": True}})

    def _check_subscription(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            subscribed = self.account.id in self._webhook(req).subscribers
        return ApiResult(200, {"data": {"subscribed": subscribed}})

    def _list_subscriptions(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            hook = self._webhook(req)
            data = {"application_id": "emulator-app", "webhook_id": hook.id,
                    "webhook_url": hook.url,
                    "subscriptions": [{"user_id": uid} for uid in hook.subscribers]}
        return ApiResult(200, {"data": data})

    def _unsubscribe(self, req: ApiRequest) -> ApiResult:
        user_id = req.path_params["user_id"]
        with self._lock:
            hook = self._webhook(req)
            if user_id not in hook.subscribers:
                raise _webhook_failure("SubscriptionNotFound", f"{user_id} is not subscribed")
            hook.subscribers.remove(user_id)
        return ApiResult(200, {"data": {"subscribed": False}})

    def _count_subscriptions(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            count = sum(len(w.subscribers) for w in self._webhooks.values())
        return ApiResult(200, {"data": {
            "account_name": SERVER_HEADER, "provisioned_count": str(self.max_webhooks),
            "subscriptions_count_all": str(count), "subscriptions_count_direct_messages": "0"}})

    # -- controls (not X) -----------------------------------------------------------------------

    def add_user(self, user_id: str, username: str, name: str | None = None) -> XUser:
        """Make a user known (or update one): authors of mentions and DMs are users.

        Raises:
            ValueError: when `user_id` is not a numeric X user id.
        """
        if not _ID.fullmatch(user_id):
            raise ValueError(f"an X user id is 1 to 19 digits, not {user_id!r}")
        user = XUser(id=user_id, username=username.removeprefix("@"), name=name or username)
        with self._lock:
            self._users[user_id] = user
        return user

    def add_mention(self, *, author_id: str, username: str, text: str, name: str | None = None,
                    in_reply_to_tweet_id: str | None = None) -> dict[str, Any]:
        """A post by another user that mentions (or replies to) the account; returns it whole.

        Text over 280 weighted characters becomes a long post (`note_tweet`), as on X.

        Raises:
            ValueError: for an empty text or a non-numeric author id.
        """
        if not text:
            raise ValueError("a post needs text")
        self.add_user(author_id, username, name)
        with self._lock:
            post = self._new_post(author_id, text, in_reply_to_tweet_id, is_mention=True)
        log.info("X emulator: added mention %s", post.id, extra={"author_id": author_id})
        return render_post(post, _post_fields(post))

    def add_dm(self, *, sender_id: str, username: str, text: str,
               name: str | None = None) -> dict[str, Any]:
        """A DM from a user to the account; returns the event with every field.

        Raises:
            ValueError: for an empty text or a non-numeric sender id.
        """
        if not text:
            raise ValueError("a DM needs text")
        self.add_user(sender_id, username, name)
        event = self._store_dm(sender_id, self.account.id, text)
        log.info("X emulator: added DM %s", event.id, extra={"sender_id": sender_id})
        return render_dm_event(event, ("sender_id", "created_at", "dm_conversation_id",
                                       "entities"))

    def posted(self) -> list[dict[str, Any]]:
        """Everything deskbridge posted (posts and DMs), oldest first."""
        with self._lock:
            return [dict(item) for item in self._posted]

    def fail_next(self, endpoint: str, count: int = 1, status: int = 429,
                  reset_after: float = WINDOW_SECONDS) -> None:
        """Make the next `count` calls to `endpoint` (e.g. "GET /2/dm_events") fail.

        A 429 carries `x-rate-limit-reset` `reset_after` seconds from now.

        Raises:
            ValueError: for an endpoint the emulator does not serve, or an unusable status.
        """
        if endpoint not in ROUTES:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(ROUTES)}")
        if status not in _FAILURE_STATUSES or count < 0:
            raise ValueError(f"status must be one of {_FAILURE_STATUSES}, count >= 0")
        with self._lock:
            self._failures[endpoint] = _Failure(count, status, reset_after)

    @property
    def calls(self) -> dict[str, int]:
        """How many calls each X endpoint received (answered or refused)."""
        with self._lock:
            return dict(self._calls)

    def webhooks(self) -> list[dict[str, Any]]:
        """The registered webhooks as GET /2/webhooks lists them, with their subscribers."""
        with self._lock:
            return [self._render_webhook(w) | {"subscribers": list(w.subscribers)}
                    for w in self._webhooks.values()]

    def deliver(self, payload: bytes | Mapping[str, Any]) -> list[dict[str, Any]]:
        """POST an Account Activity event to every valid webhook, signed as X signs it.

        Bytes are sent exactly as given (a recorded payload); a mapping is sent as JSON.
        Returns, per webhook, its id, URL and the HTTP status (or the error).
        """
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"content-type": "application/json", "user-agent": SERVER_HEADER,
                   "x-twitter-webhooks-signature":
                       sign_webhook_body(self.credentials.consumer_secret, body)}
        with self._lock:
            targets = [(w.id, w.url) for w in self._webhooks.values() if w.valid]
        return [self._deliver_one(hook_id, url, body, headers) for hook_id, url in targets]

    def _deliver_one(self, hook_id: str, url: str, body: bytes,
                     headers: Mapping[str, str]) -> dict[str, Any]:
        outcome: dict[str, Any] = {"webhook_id": hook_id, "url": url}
        try:
            answer = self._http.post(url, data=body, headers=dict(headers),
                                     timeout=self.delivery_timeout)
            outcome["status"] = answer.status_code
        except requests.RequestException as err:
            outcome["error"] = str(err)
        log.info("X emulator: delivered an event to webhook %s", hook_id, extra=outcome)
        return outcome

    def channel_settings(self, base_url: str) -> XChannelSettings:
        """Settings for a deskbridge X channel that talks to this emulator at `base_url`."""
        c = self.credentials
        return XChannelSettings.model_validate({
            "type": "x", "account_id": self.account.id, "handle": self.account.username,
            "consumer_key": c.consumer_key, "consumer_secret": c.consumer_secret,
            "access_token": c.access_token, "access_token_secret": c.access_token_secret,
            "bearer_token": c.bearer_token, "api_base_url": base_url})


# ---------------------------------------------------------------------------------------------
# The Flask app: thin views over XEmulator.
# ---------------------------------------------------------------------------------------------

def _json_response(status: int, body: Mapping[str, Any], content_type: str = JSON,
                   headers: Mapping[str, str] | None = None) -> Response:
    # Success bodies come with sorted keys, as X's do; error bodies keep X's own order.
    text = json.dumps(body, ensure_ascii=False, sort_keys=status < 400)
    # "403 Forbidden", as X words it (werkzeug alone would send "403 FORBIDDEN").
    reason = HTTPStatus(status).phrase
    response = Response(text.encode(), status=f"{status} {reason}", content_type=content_type)
    response.headers.update(dict(headers or {}))
    response.headers["server"] = SERVER_HEADER
    return response


def _signed_params() -> list[tuple[str, str]]:
    params = list(request.args.items(multi=True))
    if request.mimetype == "application/x-www-form-urlencoded":
        params += list(request.form.items(multi=True))
    return params


def _api_view(emulator: XEmulator, route: str) -> Callable[..., Response]:
    method = route.split(" ", 1)[0]

    def view(**path_params: str) -> Response:
        urls = [request.base_url, *(host + request.path for host in SIGNED_HOSTS)]
        auth = authenticate(request.headers.get("Authorization"), method, urls,
                            _signed_params(), emulator.credentials)
        result = emulator.handle(ApiRequest(route, path_params, request.args.to_dict(),
                                            request.get_data(), auth))
        return _json_response(result.status, result.body, result.content_type, result.headers)
    return view


def _flask_rule(route: str) -> tuple[str, str]:
    method, path = route.split(" ", 1)
    return method, re.sub(r":(\w+)", r"<\1>", path)


def _register_controls(app: Flask, emulator: XEmulator) -> None:
    """The /_emulator/ routes: the Python controls over HTTP, for the demo and other processes."""

    @app.post("/_emulator/mentions")
    def add_mention() -> Response:
        b = control_body()
        post = emulator.add_mention(
            author_id=str(b.get("author_id", "")), username=str(b.get("username", "")),
            text=str(b.get("text", "")), name=b.get("name"),
            in_reply_to_tweet_id=b.get("in_reply_to_tweet_id"))
        return _json_response(201, {"data": post})

    @app.post("/_emulator/dms")
    def add_dm() -> Response:
        b = control_body()
        event = emulator.add_dm(sender_id=str(b.get("sender_id", "")),
                                username=str(b.get("username", "")),
                                text=str(b.get("text", "")), name=b.get("name"))
        return _json_response(201, {"data": event})

    @app.get("/_emulator/posted")
    def posted() -> Response:
        return _json_response(200, {"posted": emulator.posted()})

    @app.get("/_emulator/calls")
    def calls() -> Response:
        return _json_response(200, {"calls": emulator.calls})

    @app.post("/_emulator/fail")
    def fail() -> Response:
        b = control_body()
        emulator.fail_next(str(b.get("endpoint")), int(b.get("count", 1)),
                           int(b.get("status", 429)), float(b.get("reset_after", WINDOW_SECONDS)))
        return _json_response(200, {"ok": True})

    @app.post("/_emulator/deliver")
    def deliver() -> Response:
        return _json_response(200, {"deliveries": emulator.deliver(request.get_data())})

    @app.get("/_emulator/webhooks")
    def webhooks() -> Response:
        return _json_response(200, {"webhooks": emulator.webhooks()})


def create_app(emulator: XEmulator | None = None) -> Flask:
    """The emulator as a Flask app: X's v2 routes plus the /_emulator/ controls."""
    emulator = emulator or XEmulator()
    app = Flask("deskbridge_x_emulator")
    app.extensions["x_emulator"] = emulator
    for route in ROUTES:
        method, rule = _flask_rule(route)
        app.add_url_rule(rule, endpoint=route, view_func=_api_view(emulator, route),
                         methods=[method])
    _register_controls(app, emulator)

    @app.errorhandler(ValueError)
    def bad_control(err: ValueError) -> Response:
        return _json_response(400, {"error": str(err), "emulator": SERVER_HEADER})

    @app.errorhandler(404)
    def not_found(err: Exception) -> Response:
        return _json_response(404, {"errors": [{"message": "Sorry, that page does not exist",
                                                "code": 34}]})

    @app.errorhandler(405)
    def not_allowed(err: Exception) -> Response:
        return _json_response(405, {"errors": [{"message": "Method not allowed"}]})
    return app


class EmulatorRequestHandler(BaseRequestHandler):
    """werkzeug's request handler for the X emulator (see integrations/emulation.py)."""

    label = "X emulator"


def serve(port: int = 0, host: str = LOOPBACK, emulator: XEmulator | None = None) -> None:
    """Serve the emulator on loopback until SIGINT or SIGTERM; print its base URL first.

    The first line of standard output is `http://127.0.0.1:PORT` (flushed at once).

    Raises:
        ValueError: when asked to listen anywhere but 127.0.0.1.
    """
    emulator = emulator or XEmulator()
    account = emulator.account
    serve_app(create_app(emulator), port=port, host=host, handler=EmulatorRequestHandler,
              banner=lambda url: f"X emulator (not X) for @{account.username} "
                                 f"(id {account.id}) at {url}")


