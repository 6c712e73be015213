"""An EMULATOR of the part of Zendesk Support's API that deskbridge calls, for tests and the demo.

This is not Zendesk. It is a small Flask app, served on loopback only, that answers the
requests deskbridge makes with Zendesk's own JSON shapes, status codes, error bodies and
rate-limit headers, so the real zenpy library can run against it (see `zenpy_client`). Every
response says so in its `server` header (`deskbridge-zendesk-emulator`) and every log line says
"Zendesk emulator". Production always talks to Zendesk.

What it serves under /api/v2 (each group cites the Zendesk documentation its shapes come from):
- tickets (show with `include=users`, create with `Idempotency-Key`, update), their comments
  (`sort_order`, `include=users`) and both redaction endpoints;
- users (show, show_many, me, create, create_or_update, search), their identities and
  requested tickets;
- search (`type:user twitter:handle`, `type:ticket requester:ID status<closed`, ...);
- webhooks (CRUD and signing secret) and ticket triggers (CRUD and search); a ticket update
  runs the active triggers and a matching `notification_webhook` action is delivered, signed
  as Zendesk signs, to the webhook's endpoint;
- Zendesk's account rate-limit headers on every answer, and 429s past `requests_per_minute`.

The `/_emulator/...` routes (not Zendesk) let tests and the demo add users and tickets, comment
as the agent or the requester, change tags and status, read what deskbridge wrote, inject
failures, count calls and read webhook deliveries. The same controls exist in Python on
`ZendeskEmulator`.

Known simplifications, where Zendesk would differ:
- one API credential (the agent's API token or OAuth token); other agents exist only as users;
- search reads the current state at once (no lag unless `search_lag` is set, and then only new
  objects are hidden); real Zendesk's search index lags behind writes by seconds to minutes:
  https://developer.zendesk.com/api-reference/ticketing/ticket-management/search/
- triggers run once per update and only `notification_webhook` actions are carried out; the
  conditions understood are `update_type`, `comment_is_public`, `current_tags`, `status` and
  `role` (any other condition never matches);
- placeholders are plain `{{name}}` substitutions (Liquid tags and filters are not run; a filter
  is ignored); in a JSON body each value is JSON-escaped, which keeps the body valid JSON: an
  emulator choice, not checked against a live account (`escape_json = False` renders values
  raw instead, as Zendesk would if it left a quote unescaped);
- webhook deliveries happen once, in a background thread, with no retries or circuit breaker;
- pagination links point back at the emulator (so any client can follow them), while the
  `url` of each object names the account as Zendesk does (`https://{subdomain}.zendesk.com`);
- webhook API error bodies (`{"errors": [...]}`) and some 422 wordings marked "emulator's
  wording" below were not found in Zendesk's documentation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import math
import re
import secrets
import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from html import escape as html_escape
from html import unescape as html_unescape
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

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
from integrations.rebasing import rebase_session
from integrations.zendesk.settings import ZendeskSettings

log = logging.getLogger("deskbridge.zendesk_emulator")


SERVER_HEADER = "deskbridge-zendesk-emulator"
TEXT = "text/plain; charset=utf-8"
API = "/api/v2"
WINDOW_SECONDS = 60
# "Keys expire after two hours": https://developer.zendesk.com/api-reference/ticketing/introduction/#idempotency
IDEMPOTENCY_TTL = 2 * 60 * 60
# Redacted characters become this block: https://developer.zendesk.com/api-reference/ticketing/tickets/ticket_comments/#redact-ticket-comment-in-agent-workspace
REDACTION_MARK = "\u2587"
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
# "Only the tags, subject, and priority fields can be edited on closed tickets":
# https://support.zendesk.com/hc/en-us/articles/4408894213018-About-native-system-ticket-rules
CLOSED_EDITABLE = frozenset({"tags", "additional_tags", "remove_tags", "subject", "priority"})
IDENTITY_TYPES = frozenset({"email", "twitter", "facebook", "google", "phone_number",
                            "agent_forwarding", "any_channel", "foreign", "sdk", "messaging"})
ROLES = frozenset({"end-user", "agent", "admin"})
_FAILURE_STATUSES = (429, 500, 502, 503, 504)


# ---------------------------------------------------------------------------------------------
# Webhook signatures, as Zendesk computes them.
# https://developer.zendesk.com/documentation/webhooks/verifying/ : "base64(HMACSHA256(TIMESTAMP
# + BODY))", keyed with the webhook's signing secret (as text, not base64-decoded).
# https://developer.zendesk.com/documentation/webhooks/anatomy-of-a-webhook-request/ : headers
# x-zendesk-webhook-id (a ULID), x-zendesk-webhook-invocation-id (digits),
# x-zendesk-webhook-signature-timestamp (e.g. 2021-03-25T05:09:27Z) and x-zendesk-account-id.
# ---------------------------------------------------------------------------------------------

def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Zendesk-Webhook-Signature` value: base64 of HMAC-SHA256(secret, timestamp + body)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def webhook_timestamp(moment: float) -> str:
    """The `X-Zendesk-Webhook-Signature-Timestamp` for a Unix time: ISO 8601 UTC, seconds, Z."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(moment: float) -> str:
    """A ULID (26 Crockford base-32 characters: 48-bit milliseconds, 80 random bits)."""
    value = (int(moment * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


# ---------------------------------------------------------------------------------------------
# Requests, results and Zendesk's error bodies.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApiRequest:
    """One call to a Zendesk endpoint: what a handler needs and no more.

    `link_base` is the emulator's own base URL, used for pagination links.
    """

    route: str
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    link_base: str = ""


@dataclass(frozen=True)
class ApiResult:
    """An answer in Zendesk's shape: status, body (JSON object, text or none) and headers."""

    status: int
    body: Mapping[str, Any] | str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = JSON


class ZendeskApiError(Exception):
    """A Zendesk error answer, raised from inside a handler (or a control) and returned as is."""

    def __init__(self, result: ApiResult) -> None:
        super().__init__(f"{result.status} {result.body}")
        self.result = result


def _error(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
           ) -> ZendeskApiError:
    return ZendeskApiError(ApiResult(status, body, headers or {}))


def not_found() -> ZendeskApiError:
    """404 as Zendesk words it (recorded: zenpy tests/betamax/
    TestTicketApiExceptions.test_throws_record_not_found.json)."""
    return _error(404, {"error": "RecordNotFound", "description": "Not found"})


def record_invalid(field_name: str, description: str, code: str | None = None
                   ) -> ZendeskApiError:
    """422 RecordInvalid with one detail under `field_name`, Zendesk's validation shape."""
    detail: dict[str, Any] = {"description": description}
    if code is not None:
        detail["error"] = code
    return _error(422, {"error": "RecordInvalid", "description": "Record validation errors",
                        "details": {field_name: [detail]}})


def closed_ticket() -> ZendeskApiError:
    """422 for any update to a closed ticket; body as recorded from Zendesk in
    https://github.com/Revere (spec "does not crash when trying to update a closed ticket") and
    several other public test suites."""
    return record_invalid("status", "Status: closed prevents ticket update")


def invalid_value(description: str) -> ZendeskApiError:
    """400 for a malformed request body (emulator's wording)."""
    return _error(400, {"error": "InvalidValue", "description": description})


def _unauthorized() -> ApiResult:
    # Body and realm as Zendesk sends them:
    # https://github.com/Speedygeek/ZendeskApi_v2/issues/505 (a recorded 401)
    return ApiResult(401, {"error": "Couldn't authenticate you"},
                     {"www-authenticate": 'Basic realm="Web Password"'})


def _too_many_requests(retry_after: int) -> ApiResult:
    # Status and Retry-After: https://developer.zendesk.com/documentation/ticketing/
    # using-the-zendesk-api/best-practices-for-avoiding-rate-limiting/ . The body is text, not
    # JSON, as several clients record it (e.g. ethyca/fides tests/ops/integration_tests/saas/
    # test_zendesk_task.py: b'Number of allowed API requests per minute exceeded').
    return ApiResult(429, "Number of allowed API requests per minute exceeded",
                     {"retry-after": str(retry_after)}, TEXT)


def _server_error(status: int, retry_after: int) -> ApiResult:
    headers = {"retry-after": str(retry_after)} if status == 503 else {}
    return ApiResult(status, HTTPStatus(status).phrase, headers, TEXT)


def _webhook_error(status: int, code: str, detail: str) -> ZendeskApiError:
    # Emulator's wording: the Webhooks API answers errors as a list of error objects.
    return _error(status, {"errors": [{"code": code, "title": HTTPStatus(status).phrase,
                                       "detail": detail}]})


# ---------------------------------------------------------------------------------------------
# Authentication: `{email}/token:{api_token}` (basic) or an OAuth bearer token.
# https://developer.zendesk.com/api-reference/introduction/security-and-auth/
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Credentials:
    """The one agent's email and the tokens the emulator accepts for it."""

    email: str = "agent@acme.example"
    token: str = "emulator-api-token"
    oauth_token: str = "emulator-oauth-token"


def is_authenticated(authorization: str | None, credentials: Credentials) -> bool:
    """Whether an `Authorization` header carries the agent's API token or OAuth token."""
    value = authorization or ""
    if value.startswith("Bearer "):
        given = value.removeprefix("Bearer ").strip().encode()
        return hmac.compare_digest(given, credentials.oauth_token.encode())
    if not value.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(value.removeprefix("Basic ").strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    user, _, secret = decoded.partition(":")
    # Password access is switched off for the API; only `{email}/token` is accepted here.
    return (user.lower() == f"{credentials.email.lower()}/token"
            and hmac.compare_digest(secret.encode(), credentials.token.encode()))


# ---------------------------------------------------------------------------------------------
# Rate limits: one account-wide window per minute.
# Headers as recorded on a real answer in 2024 (zenpy tests/test_api/betamax/
# TestCommentRedaction.test_comment_redact.json): x-rate-limit, x-rate-limit-remaining,
# ratelimit-limit, ratelimit-remaining, ratelimit-reset; named in
# https://developer.zendesk.com/documentation/api-basics/best-practices/best-practices-for-avoiding-rate-limiting
# ---------------------------------------------------------------------------------------------

@dataclass
class _Window:
    limit: int
    start: float = -math.inf
    used: int = 0

    def _roll(self, now: float) -> None:
        if now >= self.start + WINDOW_SECONDS:
            self.start, self.used = math.floor(now / WINDOW_SECONDS) * WINDOW_SECONDS, 0

    def take(self, now: float) -> bool:
        """Count one call in the current minute; False when the minute's calls are spent."""
        self._roll(now)
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def seconds_left(self, now: float) -> int:
        """Whole seconds until the window resets (at least 1)."""
        return max(1, math.ceil(self.start + WINDOW_SECONDS - now))

    def headers(self, now: float) -> dict[str, str]:
        """The five account rate-limit headers Zendesk sends on every answer."""
        self._roll(now)
        left = str(max(self.limit - self.used, 0))
        return {"x-rate-limit": str(self.limit), "x-rate-limit-remaining": left,
                "ratelimit-limit": str(self.limit), "ratelimit-remaining": left,
                "ratelimit-reset": str(self.seconds_left(now))}


@dataclass
class _Failure:
    count: int
    status: int
    retry_after: int


# ---------------------------------------------------------------------------------------------
# Placeholders in a trigger's webhook body.
# https://support.zendesk.com/hc/en-us/articles/4408886858138-Zendesk-placeholders-reference
# `{{ticket.latest_comment.id}}` renders the comment id, while a placeholder that does not exist
# (e.g. `{{ticket.latest_comment_id}}`) renders as the empty string: observed on a live account,
# recorded in a public test suite (index id 62035483813, "the comment-id placeholder defect").
# ---------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*(?:\|[^}]*)?\}\}")


def render_placeholders(template: str, values: Mapping[str, str],
                        escape: Callable[[str], str] | None = None) -> str:
    """`template` with each `{{name}}` replaced by `values[name]` (unknown names: "").

    `escape` is applied to each substituted value (e.g. JSON string escaping).
    """
    def substitute(match: re.Match[str]) -> str:
        value = values.get(match.group(1), "")
        return escape(value) if escape is not None else value
    return _PLACEHOLDER.sub(substitute, template)


def json_escape(value: str) -> str:
    """`value` escaped for use inside a JSON string literal (without the quotes)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


# ---------------------------------------------------------------------------------------------
# Trigger conditions.
# https://developer.zendesk.com/documentation/ticketing/reference-guides/conditions-reference/
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TicketUpdate:
    """What a trigger sees of one ticket update: pure data, so conditions are pure functions."""

    update_type: str
    status: str
    previous_status: str | None
    tags: tuple[str, ...]
    comment_public: bool | None
    current_user_role: str


def _status_rank(status: str) -> int:
    return STATUSES.index(status) if status in STATUSES else -1


def _status_condition(operator: str, value: str, update: TicketUpdate) -> bool:
    now, before = update.status, update.previous_status
    checks: dict[str, Callable[[], bool]] = {
        "is": lambda: now == value,
        "is_not": lambda: now != value,
        "less_than": lambda: _status_rank(now) < _status_rank(value),
        "greater_than": lambda: _status_rank(now) > _status_rank(value),
        "changed": lambda: before != now,
        "not_changed": lambda: before == now,
        "value": lambda: before != now and now == value,
        "value_previous": lambda: before != now and before == value,
        "not_value": lambda: before != now and now != value,
        "not_value_previous": lambda: before != now and before != value,
    }
    check = checks.get(operator)
    return check() if check is not None else False


def _comment_condition(value: str, update: TicketUpdate) -> bool:
    if value == "not_relevant":
        return True
    if value in ("true", "requester_can_see_comment"):
        return update.comment_public is True
    if value == "false":
        return update.comment_public is False
    return False


def condition_matches(condition: Mapping[str, Any], update: TicketUpdate) -> bool:
    """Whether one trigger condition holds for `update`; an unknown condition never does."""
    name = str(condition.get("field", ""))
    operator = str(condition.get("operator") or "is")
    raw = condition.get("value")
    value = str(raw).lower() if isinstance(raw, bool) else str(raw if raw is not None else "")
    if name == "update_type":
        equal = value.lower() == update.update_type.lower()
        return equal if operator == "is" else not equal
    if name == "comment_is_public":
        held = _comment_condition(value.lower(), update)
        return held if operator == "is" else not held
    if name == "current_tags":
        wanted = set(value.lower().split())
        present = bool(wanted & set(update.tags))
        return present if operator == "includes" else not present
    if name == "status":
        return _status_condition(operator, value, update)
    if name == "role":
        role = update.current_user_role.replace("-", "_")
        return (role == value) if operator == "is" else (role != value)
    log.warning("Zendesk emulator: trigger condition %r is not emulated", name)
    return False


def conditions_match(conditions: Mapping[str, Any], update: TicketUpdate) -> bool:
    """Zendesk's rule: every `all` condition holds and, if `any` is given, at least one does."""
    every = list(conditions.get("all") or [])
    some = list(conditions.get("any") or [])
    return (all(condition_matches(c, update) for c in every)
            and (not some or any(condition_matches(c, update) for c in some)))


# ---------------------------------------------------------------------------------------------
# Search queries: `type:user twitter:handle`, `type:ticket requester:123 status<closed`.
# https://support.zendesk.com/hc/en-us/articles/4408886879258 (search reference)
# ---------------------------------------------------------------------------------------------

_TERM = re.compile(r"^(-?)([a-z_]+)(<=|>=|:|<|>)(.+)$")


@dataclass(frozen=True)
class SearchTerm:
    """One `keyword<op>value` term of a query, or a free word (`keyword` empty)."""

    keyword: str
    operator: str
    value: str
    negated: bool = False


def parse_query(query: str) -> list[SearchTerm]:
    """The terms of a search query; quoted phrases stay one value."""
    try:
        words = shlex.split(query)
    except ValueError:
        words = query.split()
    terms = []
    for word in words:
        match = _TERM.match(word)
        if match is None:
            terms.append(SearchTerm("", ":", word.lower()))
        else:
            negated, keyword, operator, value = match.groups()
            terms.append(SearchTerm(keyword.lower(), operator, value, bool(negated)))
    return terms


def _compare(operator: str, left: int, right: int) -> bool:
    return {":": left == right, "<": left < right, ">": left > right,
            "<=": left <= right, ">=": left >= right}[operator]


# ---------------------------------------------------------------------------------------------
# Stored objects.
# ---------------------------------------------------------------------------------------------

@dataclass
class _User:
    id: int
    name: str
    email: str | None
    role: str
    external_id: str | None
    created_at: float
    updated_at: float
    verified: bool = True
    tags: list[str] = field(default_factory=list)
    user_fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Identity:
    id: int
    user_id: int
    type: str
    value: str
    primary: bool
    created_at: float
    verified: bool = True


@dataclass
class _Comment:
    id: int
    ticket_id: int
    author_id: int
    body: str
    html_body: str
    public: bool
    audit_id: int
    via: dict[str, Any]
    created_at: float


@dataclass
class _Ticket:
    id: int
    subject: str | None
    description: str
    status: str
    requester_id: int
    submitter_id: int
    via: dict[str, Any]
    created_at: float
    updated_at: float
    priority: str | None = None
    type: str | None = None
    assignee_id: int | None = None
    group_id: int | None = None
    brand_id: int | None = None
    external_id: str | None = None
    tags: list[str] = field(default_factory=list)
    custom_fields: list[Any] = field(default_factory=list)
    followup_ids: list[int] = field(default_factory=list)
    is_public: bool = True
    default_public: bool = True
    comment_ids: list[int] = field(default_factory=list)


@dataclass
class _Webhook:
    id: str
    name: str
    endpoint: str
    http_method: str
    request_format: str
    status: str
    subscriptions: list[str]
    signing_secret: str
    created_at: float
    created_by: str
    description: str | None = None
    authentication: dict[str, Any] | None = None
    custom_headers: dict[str, str] = field(default_factory=dict)
    updated_at: float | None = None
    updated_by: str | None = None


@dataclass
class _Trigger:
    id: int
    title: str
    active: bool
    conditions: dict[str, list[Any]]
    actions: list[dict[str, Any]]
    position: int
    created_at: float
    updated_at: float
    description: str | None = None
    category_id: str | None = None


@dataclass
class _Idempotent:
    body: Any
    result: ApiResult
    expires_at: float


@dataclass(frozen=True)
class _Invocation:
    webhook_id: str
    trigger_id: int
    ticket_id: int
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


def _iso(moment: float) -> str:
    return webhook_timestamp(moment)


def _api_via(channel: str = "api") -> dict[str, Any]:
    return {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}}


def _normalise_tags(tags: Iterable[Any]) -> list[str]:
    # Zendesk stores tags lowercased, one word each, without duplicates.
    words = [w.lower() for tag in tags for w in str(tag).split()]
    return list(dict.fromkeys(words))


def _html_for(body: str) -> str:
    # The wrapper Zendesk puts around comments (recorded: zenpy betamax
    # TestSingleTicketCRUD and TestCommentRedaction).
    paragraph = html_escape(body, quote=False).replace("\n", "<br>")
    return f'<div class="zd-comment" dir="auto"><p dir="auto">{paragraph}</p></div>'


_TAG = re.compile(r"<[^>]+>")


def _text_of(html: str) -> str:
    spaced = re.sub(r"(?i)<br\s*/?>|</p>", "\n", html)
    return html_unescape(_TAG.sub("", spaced)).strip()


def _json_body(req: ApiRequest) -> dict[str, Any]:
    try:
        body = json.loads(req.body or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise invalid_value("The request body must be a JSON object")
    return body


def _root(req: ApiRequest, key: str) -> dict[str, Any]:
    value = _json_body(req).get(key)
    if not isinstance(value, dict):
        raise invalid_value(f"The request body must contain a `{key}` object")
    return value


def _int_param(req: ApiRequest, name: str) -> int:
    try:
        return int(req.path_params[name])
    except (KeyError, ValueError):
        raise not_found() from None


def _optional_int(value: Any, field_name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise record_invalid(field_name, f"{field_name}: {value} is not a number",
                             "InvalidValue") from None


# ---------------------------------------------------------------------------------------------
# Routes: Zendesk's endpoint, written with `{name}` path parameters. Each is also served with a
# `.json` suffix (as Zendesk does), except the webhooks API, which has none.
# ---------------------------------------------------------------------------------------------

ROUTES: tuple[str, ...] = (
    # https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/
    "GET /api/v2/tickets/{ticket_id}",
    "POST /api/v2/tickets",
    "PUT /api/v2/tickets/{ticket_id}",
    # https://developer.zendesk.com/api-reference/ticketing/tickets/ticket_comments/
    "GET /api/v2/tickets/{ticket_id}/comments",
    "PUT /api/v2/tickets/{ticket_id}/comments/{comment_id}/redact",
    "PUT /api/v2/comment_redactions/{comment_id}",
    # https://developer.zendesk.com/api-reference/ticketing/users/users/
    "GET /api/v2/users/me",
    "GET /api/v2/users/search",
    "GET /api/v2/users/show_many",
    "POST /api/v2/users/create_or_update",
    "GET /api/v2/users/{user_id}",
    "POST /api/v2/users",
    "GET /api/v2/users/{user_id}/tickets/requested",
    # https://developer.zendesk.com/api-reference/ticketing/users/user_identities/
    "GET /api/v2/users/{user_id}/identities",
    "POST /api/v2/users/{user_id}/identities",
    # https://developer.zendesk.com/api-reference/ticketing/ticket-management/search/
    "GET /api/v2/search",
    # https://developer.zendesk.com/api-reference/webhooks/webhooks-api/webhooks/
    "GET /api/v2/webhooks",
    "POST /api/v2/webhooks",
    "GET /api/v2/webhooks/{webhook_id}",
    "PUT /api/v2/webhooks/{webhook_id}",
    "PATCH /api/v2/webhooks/{webhook_id}",
    "DELETE /api/v2/webhooks/{webhook_id}",
    "GET /api/v2/webhooks/{webhook_id}/signing_secret",
    "POST /api/v2/webhooks/{webhook_id}/signing_secret",
    # https://developer.zendesk.com/api-reference/ticketing/business-rules/triggers/
    "GET /api/v2/triggers",
    "POST /api/v2/triggers",
    "GET /api/v2/triggers/search",
    "GET /api/v2/triggers/{trigger_id}",
    "PUT /api/v2/triggers/{trigger_id}",
    "DELETE /api/v2/triggers/{trigger_id}",
)


# ---------------------------------------------------------------------------------------------
# The emulator's state and Zendesk's endpoints as plain methods.
# ---------------------------------------------------------------------------------------------

class ZendeskEmulator:
    """The emulated Zendesk account: users, tickets, comments, webhooks, triggers (thread-safe)."""

    def __init__(self, *, subdomain: str = "acme", credentials: Credentials | None = None,
                 agent_name: str = "Deskbridge Agent", clock: Clock = time.time,
                 requests_per_minute: int = 700, latency: float = 0.0, first_ticket_id: int = 1,
                 search_lag: float = 0.0, delivery_timeout: float = 10.0,
                 account_id: int = 12345678) -> None:
        self.subdomain = subdomain
        self.credentials = credentials or Credentials()
        self.clock = clock
        self.latency = latency
        self.search_lag = search_lag
        self.delivery_timeout = delivery_timeout
        self.account_id = account_id
        self.escape_json = True  # False: placeholders in a JSON body are rendered unescaped
        self.public_url = f"https://{subdomain}.zendesk.com"
        self._lock = threading.RLock()
        self._delivered = threading.Condition(self._lock)
        self._window = _Window(requests_per_minute)
        self._calls: Counter[str] = Counter()
        self._failures: dict[str, _Failure] = {}
        self._ticket_ids = itertools.count(first_ticket_id)
        self._held: dict[str, float] = {}
        self._object_ids = itertools.count(20_000_000_000_001)
        self._invocation_ids = itertools.count(8_350_205_582)
        self._users: dict[int, _User] = {}
        self._identities: dict[int, _Identity] = {}
        self._tickets: dict[int, _Ticket] = {}
        self._comments: dict[int, _Comment] = {}
        self._webhooks: dict[str, _Webhook] = {}
        self._triggers: dict[int, _Trigger] = {}
        self._idempotency: dict[str, _Idempotent] = {}
        self._deliveries: list[dict[str, Any]] = []
        self._http = loopback_session()
        self.agent_id = self._new_user(agent_name, self.credentials.email, "agent", None).id
        self._handlers = self._handler_table()

    def _handler_table(self) -> dict[str, Callable[[ApiRequest], ApiResult]]:
        table: dict[str, Callable[[ApiRequest], ApiResult]] = {
            "GET /api/v2/tickets/{ticket_id}": self._show_ticket,
            "POST /api/v2/tickets": self._create_ticket,
            "PUT /api/v2/tickets/{ticket_id}": self._update_ticket,
            "GET /api/v2/tickets/{ticket_id}/comments": self._list_comments,
            "PUT /api/v2/tickets/{ticket_id}/comments/{comment_id}/redact": self._redact_string,
            "PUT /api/v2/comment_redactions/{comment_id}": self._redact_comment,
            "GET /api/v2/users/me": self._show_me,
            "GET /api/v2/users/search": self._search_users,
            "GET /api/v2/users/show_many": self._show_many_users,
            "POST /api/v2/users/create_or_update": self._create_or_update_user,
            "GET /api/v2/users/{user_id}": self._show_user,
            "POST /api/v2/users": self._create_user,
            "GET /api/v2/users/{user_id}/tickets/requested": self._requested_tickets,
            "GET /api/v2/users/{user_id}/identities": self._list_identities,
            "POST /api/v2/users/{user_id}/identities": self._create_identity,
            "GET /api/v2/search": self._search,
            "GET /api/v2/webhooks": self._list_webhooks,
            "POST /api/v2/webhooks": self._create_webhook,
            "GET /api/v2/webhooks/{webhook_id}": self._show_webhook,
            "PUT /api/v2/webhooks/{webhook_id}": self._replace_webhook,
            "PATCH /api/v2/webhooks/{webhook_id}": self._patch_webhook,
            "DELETE /api/v2/webhooks/{webhook_id}": self._delete_webhook,
            "GET /api/v2/webhooks/{webhook_id}/signing_secret": self._show_secret,
            "POST /api/v2/webhooks/{webhook_id}/signing_secret": self._reset_secret,
            "GET /api/v2/triggers": self._list_triggers,
            "POST /api/v2/triggers": self._create_trigger,
            "GET /api/v2/triggers/search": self._search_triggers,
            "GET /api/v2/triggers/{trigger_id}": self._show_trigger,
            "PUT /api/v2/triggers/{trigger_id}": self._update_trigger,
            "DELETE /api/v2/triggers/{trigger_id}": self._delete_trigger,
        }
        assert set(table) == set(ROUTES)
        return table

    # -- dispatch --------------------------------------------------------------------------------

    def handle(self, req: ApiRequest, authorization: str | None) -> ApiResult:
        """Answer one call as Zendesk would: auth, injected failures, rate limit, then the work."""
        with self._lock:
            self._calls[req.route] += 1
        if self.latency > 0:
            time.sleep(self.latency)
        if not is_authenticated(authorization, self.credentials):
            return _unauthorized()
        refusal, headers = self._admit(req.route)
        if refusal is not None:
            return replace(refusal, headers={**headers, **refusal.headers})
        try:
            result = self._handlers[req.route](req)
        except ZendeskApiError as err:
            result = err.result
        hold = self._held.get(req.route, 0.0)
        if hold > 0:  # the work is done, the answer is slow to arrive (a flaky network)
            time.sleep(hold)
        log.debug("Zendesk emulator: %s -> %s", req.route, result.status,
                  extra={"endpoint": req.route, "status": result.status})
        return replace(result, headers={**headers, **result.headers})

    def _admit(self, route: str) -> tuple[ApiResult | None, dict[str, str]]:
        with self._lock:
            now = self.clock()
            failure = self._failures.get(route)
            if failure is not None and failure.count > 0:
                failure.count -= 1
                refusal = (_too_many_requests(failure.retry_after) if failure.status == 429
                           else _server_error(failure.status, failure.retry_after))
                return refusal, self._window.headers(now)
            if not self._window.take(now):
                return _too_many_requests(self._window.seconds_left(now)), \
                    self._window.headers(now)
            return None, self._window.headers(now)

    # -- ids, time and lookups -------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock()

    def _user(self, user_id: int) -> _User:
        user = self._users.get(user_id)
        if user is None:
            raise not_found()
        return user

    def _ticket(self, ticket_id: int) -> _Ticket:
        ticket = self._tickets.get(ticket_id)
        if ticket is None:
            raise not_found()
        return ticket

    def _user_by_email(self, email: str) -> _User | None:
        wanted = email.lower()
        return next((u for u in self._users.values()
                     if u.email is not None and u.email.lower() == wanted), None)

    def _identities_of(self, user_id: int) -> list[_Identity]:
        return sorted((i for i in self._identities.values() if i.user_id == user_id),
                      key=lambda i: i.id)

    def _user_by_identity(self, kind: str, value: str) -> _User | None:
        wanted = value.lower().removeprefix("@")
        for identity in self._identities.values():
            if identity.type == kind and identity.value.lower() == wanted:
                return self._users.get(identity.user_id)
        return None

    # -- rendering -------------------------------------------------------------------------------

    def _render_user(self, user: _User) -> dict[str, Any]:
        staff = user.role != "end-user"
        return {
            "id": user.id, "url": f"{self.public_url}{API}/users/{user.id}.json",
            "name": user.name, "email": user.email, "created_at": _iso(user.created_at),
            "updated_at": _iso(user.updated_at), "time_zone": "UTC",
            "iana_time_zone": "Etc/UTC", "phone": None, "shared_phone_number": None,
            "photo": None, "locale_id": 1, "locale": "en-US", "organization_id": None,
            "role": user.role, "verified": user.verified, "external_id": user.external_id,
            "tags": list(user.tags), "alias": None, "active": True, "shared": False,
            "shared_agent": False, "last_login_at": None, "two_factor_auth_enabled": None,
            "signature": None, "details": None, "notes": None, "role_type": None,
            "custom_role_id": None, "moderator": staff,
            "ticket_restriction": None if staff else "requested",
            "only_private_comments": False, "restricted_agent": False, "suspended": False,
            "default_group_id": None, "report_csv": False, "user_fields": dict(user.user_fields),
        }

    def _render_identity(self, identity: _Identity) -> dict[str, Any]:
        return {
            "url": f"{self.public_url}{API}/users/{identity.user_id}/identities/"
                   f"{identity.id}.json",
            "id": identity.id, "user_id": identity.user_id, "type": identity.type,
            "value": identity.value, "verified": identity.verified, "primary": identity.primary,
            "created_at": _iso(identity.created_at), "updated_at": _iso(identity.created_at),
            "undeliverable_count": 0, "deliverable_state": "deliverable",
        }

    def _render_ticket(self, t: _Ticket) -> dict[str, Any]:
        # Field order and values as recorded (zenpy betamax TestSingleTicketCRUD), plus the
        # fields Zendesk has added since.
        return {
            "url": f"{self.public_url}{API}/tickets/{t.id}.json", "id": t.id,
            "external_id": t.external_id, "via": t.via, "created_at": _iso(t.created_at),
            "updated_at": _iso(t.updated_at), "generated_timestamp": int(t.updated_at),
            "type": t.type, "subject": t.subject, "raw_subject": t.subject,
            "description": t.description, "priority": t.priority, "status": t.status,
            "recipient": None, "requester_id": t.requester_id,
            "submitter_id": t.submitter_id, "assignee_id": t.assignee_id,
            "organization_id": None, "group_id": t.group_id, "collaborator_ids": [],
            "follower_ids": [], "email_cc_ids": [], "forum_topic_id": None, "problem_id": None,
            "has_incidents": False, "is_public": t.is_public, "due_at": None,
            "tags": list(t.tags), "custom_fields": list(t.custom_fields),
            "satisfaction_rating": None, "sharing_agreement_ids": [],
            "fields": list(t.custom_fields), "followup_ids": list(t.followup_ids),
            "brand_id": t.brand_id, "allow_channelback": False, "allow_attachments": True,
            "from_messaging_channel": False,
        }

    def _render_comment(self, c: _Comment) -> dict[str, Any]:
        # Recorded shape: zenpy betamax TestCommentRedaction / TestSingleTicketCRUD.
        return {
            "id": c.id, "type": "Comment", "author_id": c.author_id, "body": c.body,
            "html_body": c.html_body, "plain_body": c.body, "public": c.public,
            "attachments": [], "audit_id": c.audit_id, "via": c.via,
            "created_at": _iso(c.created_at),
            "metadata": {"system": {"client": SERVER_HEADER, "ip_address": LOOPBACK,
                                    "location": None, "latitude": None, "longitude": None},
                         "custom": {}},
        }

    def _render_webhook(self, hook: _Webhook) -> dict[str, Any]:
        # Shape: https://developer.zendesk.com/api-reference/webhooks/webhooks-api/webhooks/
        # (credentials in `authentication.data` are never sent back).
        body: dict[str, Any] = {
            "id": hook.id, "name": hook.name, "status": hook.status,
            "subscriptions": list(hook.subscriptions), "created_at": _iso(hook.created_at),
            "created_by": hook.created_by, "endpoint": hook.endpoint,
            "http_method": hook.http_method, "request_format": hook.request_format,
        }
        if hook.description is not None:
            body["description"] = hook.description
        if hook.authentication is not None:
            body["authentication"] = {k: v for k, v in hook.authentication.items()
                                      if k != "data"}
        if hook.custom_headers:
            body["custom_headers"] = dict(hook.custom_headers)
        if hook.updated_at is not None:
            body["updated_at"], body["updated_by"] = _iso(hook.updated_at), hook.updated_by
        return body

    def _render_trigger(self, trigger: _Trigger) -> dict[str, Any]:
        return {
            "url": f"{self.public_url}{API}/triggers/{trigger.id}.json", "id": trigger.id,
            "title": trigger.title, "active": trigger.active,
            "updated_at": _iso(trigger.updated_at), "created_at": _iso(trigger.created_at),
            "default": False, "actions": [dict(a) for a in trigger.actions],
            "conditions": {"all": list(trigger.conditions.get("all", [])),
                           "any": list(trigger.conditions.get("any", []))},
            "description": trigger.description, "position": trigger.position,
            "raw_title": trigger.title, "category_id": trigger.category_id,
        }

    # -- pagination ------------------------------------------------------------------------------

    def _page(self, req: ApiRequest, key: str, items: Sequence[dict[str, Any]]
              ) -> dict[str, Any]:
        """One page of `items` under `key`: cursor pagination when `page[size]` is asked for,
        else offset pagination (https://developer.zendesk.com/api-reference/introduction/
        pagination/)."""
        path = req.link_base + "/" + req.route.split(" ", 1)[1].lstrip("/")
        for name, value in req.path_params.items():
            path = path.replace("{" + name + "}", value)
        path += "" if "/webhooks" in path else ".json"
        extra = {k: v for k, v in req.query.items()
                 if k not in ("page[size]", "page[after]", "page[before]", "page", "per_page")}
        if "page[size]" in req.query:
            return self._cursor_page(req, key, items, path, extra)
        per_page = _clamp(req.query.get("per_page"), 100)
        page = max(1, _clamp(req.query.get("page"), 1, high=10**6))
        start = (page - 1) * per_page
        chosen = list(items[start:start + per_page])

        def link(number: int) -> str:
            return f"{path}?" + urlencode({**extra, "page": number, "per_page": per_page})
        return {key: chosen,
                "next_page": link(page + 1) if start + per_page < len(items) else None,
                "previous_page": link(page - 1) if page > 1 else None,
                "count": len(items)}

    @staticmethod
    def _cursor_page(req: ApiRequest, key: str, items: Sequence[dict[str, Any]], path: str,
                     extra: Mapping[str, str]) -> dict[str, Any]:
        size = _clamp(req.query.get("page[size]"), 100)
        start = _decode_cursor(req.query.get("page[after]"))
        if "page[before]" in req.query:
            start = max(_decode_cursor(req.query.get("page[before]")) - size, 0)
        chosen = list(items[start:start + size])
        has_more = start + size < len(items)
        after = _encode_cursor(start + size) if chosen else None
        before = _encode_cursor(start) if chosen else None
        query = {**extra, "page[size]": size}
        next_link = f"{path}?" + urlencode({**query, "page[after]": after}) \
            if has_more and after else None
        prev_link = f"{path}?" + urlencode({**query, "page[before]": before}) \
            if start > 0 and before else None
        return {key: chosen,
                "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": before},
                "links": {"prev": prev_link, "next": next_link}}

    # -- tickets: https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/ --------

    def _show_ticket(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            ticket = self._ticket(_int_param(req, "ticket_id"))
            body: dict[str, Any] = {"ticket": self._render_ticket(ticket)}
            includes = {i.strip() for i in req.query.get("include", "").split(",")}
            if "users" in includes:
                ids = [ticket.requester_id, ticket.submitter_id, ticket.assignee_id]
                ids += [self._comments[c].author_id for c in ticket.comment_ids]
                body["users"] = [self._render_user(self._users[u])
                                 for u in dict.fromkeys(ids) if u in self._users]
            for other in ("groups", "organizations"):
                if other in includes:
                    body[other] = []
            return ApiResult(200, body)

    def _create_ticket(self, req: ApiRequest) -> ApiResult:
        key = req.headers.get("idempotency-key")
        with self._lock:
            if key:
                replay = self._idempotent_replay(key, req)
                if replay is not None:
                    return replay
            ticket, audit = self._open_ticket(_root(req, "ticket"), self.agent_id, "api")
            result = ApiResult(201, {"ticket": self._render_ticket(ticket), "audit": audit},
                               {"location": f"{self.public_url}{API}/tickets/{ticket.id}.json"})
            if key:  # only a create that succeeded is kept: a refused one may be retried
                self._idempotency[key] = _Idempotent(_parsed(req.body), result,
                                                     self._now() + IDEMPOTENCY_TTL)
                result = replace(result, headers={**result.headers,
                                                  "x-idempotency-lookup": "miss"})
        return result

    def _idempotent_replay(self, key: str, req: ApiRequest) -> ApiResult | None:
        """The stored answer for a repeated key (`x-idempotency-lookup: hit`), None for a new
        key; a reused key with another body is refused.
        https://developer.zendesk.com/api-reference/ticketing/introduction/#idempotency ; the
        400 IdempotentRequestError body as the official Java client expects it
        (cloudbees-oss/zendesk-java-client IdempotencyUtil.java) and public test suites
        record it."""
        stored = self._idempotency.get(key)
        if stored is None or stored.expires_at <= self._now():
            self._idempotency.pop(key, None)
            return None
        if stored.body != _parsed(req.body):
            raise _error(400, {"error": "IdempotentRequestError",
                               "description": "Request parameters don't match the given "
                                              "idempotency key"})
        return replace(stored.result, headers={**stored.result.headers,
                                               "x-idempotency-lookup": "hit"})

    def _open_ticket(self, spec: Mapping[str, Any], current_user: int, channel: str
                     ) -> tuple[_Ticket, dict[str, Any]]:
        """Create a ticket from a `ticket` object, run the triggers; the ticket and its audit."""
        comment = spec.get("comment") if isinstance(spec.get("comment"), dict) else {}
        assert isinstance(comment, dict)
        if not (comment.get("body") or comment.get("html_body") or spec.get("description")):
            # Emulator's wording for a ticket without a first comment.
            raise record_invalid("description", "Description: cannot be blank", "BlankValue")
        requester = self._requester_for(spec, current_user)
        submitter = _optional_int(spec.get("submitter_id"), "submitter_id") or current_user
        self._user(submitter)
        assignee = _optional_int(spec.get("assignee_id"), "assignee_id")
        status = str(spec.get("status") or ("open" if assignee else "new"))
        _check_status(status)
        now = self._now()
        ticket = _Ticket(
            id=next(self._ticket_ids), subject=spec.get("subject"), description="",
            status=status, requester_id=requester, submitter_id=submitter,
            via=self._via_for(spec, channel), created_at=now, updated_at=now,
            priority=spec.get("priority"), type=spec.get("type"), assignee_id=assignee,
            group_id=_optional_int(spec.get("group_id"), "group_id"),
            brand_id=_optional_int(spec.get("brand_id"), "brand_id"),
            external_id=spec.get("external_id"), tags=_normalise_tags(spec.get("tags") or []),
            custom_fields=list(spec.get("custom_fields") or []))
        first = dict(comment) or {"body": spec.get("description")}
        ticket.default_public = bool(first.get("public", True))
        audit_id = next(self._object_ids)
        # "The submitter always becomes the author of the first comment on the ticket."
        written = self._new_comment(ticket, first, submitter, audit_id)
        ticket.description, ticket.is_public = written.body, written.public
        self._tickets[ticket.id] = ticket
        self._link_followup(spec, ticket)
        events = [self._render_comment(written)] + [
            {"id": next(self._object_ids), "type": "Create", "value": value, "field_name": name}
            for name, value in (("subject", ticket.subject), ("requester_id", str(requester)),
                                ("status", ticket.status), ("priority", ticket.priority),
                                ("type", ticket.type), ("tags", list(ticket.tags)))]
        audit = self._audit(audit_id, ticket, current_user, events)
        self._run_triggers(ticket, "Create", None, written, current_user)
        log.info("Zendesk emulator: created ticket %s", ticket.id,
                 extra={"requester_id": requester})
        return ticket, audit

    def _requester_for(self, spec: Mapping[str, Any], current_user: int) -> int:
        requester_id = _optional_int(spec.get("requester_id"), "requester_id")
        if requester_id is not None:
            if requester_id not in self._users:
                raise record_invalid("requester", "Requester: is invalid", "InvalidValue")
            return requester_id
        requester = spec.get("requester")
        if not isinstance(requester, dict):
            return current_user
        email = requester.get("email")
        known = self._user_by_email(str(email)) if email else None
        if known is not None:
            return known.id
        name = str(requester.get("name") or (str(email).split("@")[0] if email else ""))
        if not name:
            raise record_invalid("requester", "Requester: Name: is too short", "InvalidValue")
        return self._new_user(name, str(email) if email else None, "end-user", None).id

    def _via_for(self, spec: Mapping[str, Any], channel: str) -> dict[str, Any]:
        source = _optional_int(spec.get("via_followup_source_id"), "via_followup_source_id")
        if source is None:
            return _api_via(channel)
        original = self._tickets.get(source)
        if original is None:
            raise record_invalid("via_followup_source_id",
                                 "Via followup source: is invalid", "InvalidValue")
        return {"channel": channel, "source": {
            "from": {"ticket_id": original.id, "subject": original.subject},
            "to": {}, "rel": "follow_up"}}

    def _link_followup(self, spec: Mapping[str, Any], ticket: _Ticket) -> None:
        source = spec.get("via_followup_source_id")
        if source is not None and int(source) in self._tickets:
            self._tickets[int(source)].followup_ids.append(ticket.id)

    def _new_comment(self, ticket: _Ticket, spec: Mapping[str, Any], default_author: int,
                     audit_id: int) -> _Comment:
        author = _optional_int(spec.get("author_id"), "author_id") or default_author
        if author not in self._users:
            raise record_invalid("author_id", "Author: is invalid", "InvalidValue")
        html = spec.get("html_body")
        if html:
            body = _text_of(str(html))
            html_body = f'<div class="zd-comment" dir="auto">{html}</div>'
        else:
            body = str(spec.get("body") or "")
            html_body = _html_for(body)
        public = bool(spec.get("public", ticket.default_public))
        comment = _Comment(next(self._object_ids), ticket.id, author, body, html_body, public,
                           audit_id, _api_via(ticket.via["channel"]), self._now())
        self._comments[comment.id] = comment
        ticket.comment_ids.append(comment.id)
        return comment

    def _audit(self, audit_id: int, ticket: _Ticket, author: int,
               events: list[dict[str, Any]]) -> dict[str, Any]:
        # Shape recorded in zenpy betamax TestSingleTicketCRUD (create and update).
        return {"id": audit_id, "ticket_id": ticket.id, "created_at": _iso(self._now()),
                "author_id": author, "via": _api_via(),
                "metadata": {"system": {"client": SERVER_HEADER, "ip_address": LOOPBACK},
                             "custom": {}},
                "events": events}

    def _update_ticket(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            ticket = self._ticket(_int_param(req, "ticket_id"))
            audit = self._change_ticket(ticket, _root(req, "ticket"), self.agent_id)
            return ApiResult(200, {"ticket": self._render_ticket(ticket), "audit": audit})

    def _change_ticket(self, ticket: _Ticket, spec: Mapping[str, Any], current_user: int
                       ) -> dict[str, Any]:
        """Apply a `ticket` update object, run the triggers; the audit. Raises ZendeskApiError."""
        if ticket.status == "closed" and set(spec) - CLOSED_EDITABLE - {"id", "url"}:
            raise closed_ticket()
        explicit = spec.get("status")
        if explicit is not None:
            _check_status(str(explicit))
        audit_id = next(self._object_ids)
        previous_status, events = ticket.status, []
        written = None
        comment = spec.get("comment")
        if isinstance(comment, dict) and (comment.get("body") or comment.get("html_body")):
            written = self._new_comment(ticket, comment, current_user, audit_id)
            events.append(self._render_comment(written))
        events += self._apply_fields(ticket, spec)
        status = self._next_status(ticket, explicit, written)
        if status != ticket.status:
            events.append(self._change_event("status", status, ticket.status))
            ticket.status = status
        ticket.updated_at = self._now()
        audit = self._audit(audit_id, ticket, current_user, events)
        self._run_triggers(ticket, "Change", previous_status, written, current_user)
        return audit

    def _next_status(self, ticket: _Ticket, explicit: Any, written: _Comment | None) -> str:
        if explicit is not None:
            return str(explicit)
        # "If an end user comments on a ticket with a status set to Pending, Solved, or On-hold,
        # the ticket status is changed to Open." and "When a New ticket is assigned to an agent,
        # the ticket status automatically changes to Open":
        # https://support.zendesk.com/hc/en-us/articles/4408894213018-About-native-system-ticket-rules
        author = self._users.get(written.author_id) if written is not None else None
        if author is not None and author.role == "end-user" \
                and ticket.status in ("pending", "solved", "hold"):
            return "open"
        if ticket.status == "new" and ticket.assignee_id is not None:
            return "open"
        return ticket.status

    def _apply_fields(self, ticket: _Ticket, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
        events = []
        tags = list(ticket.tags)
        if "tags" in spec:
            tags = _normalise_tags(spec.get("tags") or [])
        tags = _normalise_tags(tags + list(spec.get("additional_tags") or []))
        removed = set(_normalise_tags(spec.get("remove_tags") or []))
        tags = [t for t in tags if t not in removed]
        if tags != ticket.tags:
            events.append(self._change_event("tags", tags, list(ticket.tags)))
            ticket.tags = tags
        for name in ("subject", "priority", "type", "external_id"):
            if name in spec and spec[name] != getattr(ticket, name):
                events.append(self._change_event(name, spec[name], getattr(ticket, name)))
                setattr(ticket, name, spec[name])
        for name in ("assignee_id", "group_id", "brand_id"):
            if name in spec:
                value = _optional_int(spec[name], name)
                if value != getattr(ticket, name):
                    events.append(self._change_event(name, value, getattr(ticket, name)))
                    setattr(ticket, name, value)
        if "custom_fields" in spec:
            ticket.custom_fields = list(spec.get("custom_fields") or [])
        return events

    def _change_event(self, name: str, value: Any, previous: Any) -> dict[str, Any]:
        return {"id": next(self._object_ids), "type": "Change", "value": value,
                "field_name": name, "previous_value": previous}

    # -- comments: https://developer.zendesk.com/api-reference/ticketing/tickets/ticket_comments/

    def _list_comments(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            ticket = self._ticket(_int_param(req, "ticket_id"))
            comments = [self._render_comment(self._comments[c]) for c in ticket.comment_ids]
            if req.query.get("sort_order") == "desc":
                comments.reverse()
            body = self._page(req, "comments", comments)
            # `include=users` sideloads the users the page's comments name (their authors).
            # https://developer.zendesk.com/documentation/ticketing/using-the-zendesk-api/side_loading/
            if "users" in {i.strip() for i in req.query.get("include", "").split(",")}:
                ids = dict.fromkeys(c["author_id"] for c in body["comments"])
                body["users"] = [self._render_user(self._users[u]) for u in ids
                                 if u in self._users]
            return ApiResult(200, body)

    def _ticket_comment(self, ticket_id: int, comment_id: int) -> _Comment:
        comment = self._comments.get(comment_id)
        if comment is None or comment.ticket_id != ticket_id:
            raise not_found()
        return comment

    def _redact_string(self, req: ApiRequest) -> ApiResult:
        """Redact String in Comment: every occurrence of `text` becomes ▇ characters."""
        with self._lock:
            ticket = self._ticket(_int_param(req, "ticket_id"))
            comment = self._ticket_comment(ticket.id, _int_param(req, "comment_id"))
            # The newer endpoint exists because this one cannot redact closed tickets.
            if ticket.status == "closed":
                raise closed_ticket()
            text = _json_body(req).get("text")
            if not isinstance(text, str) or not text:
                raise invalid_value("`text` is required")
            _redact(comment, [text])
            return ApiResult(200, {"comment": self._render_comment(comment)})

    def _redact_comment(self, req: ApiRequest) -> ApiResult:
        """Redact Ticket Comment In Agent Workspace: what `<redact>` wraps becomes ▇."""
        with self._lock:
            body = _json_body(req)
            ticket_id = _optional_int(body.get("ticket_id"), "ticket_id")
            comment = self._ticket_comment(ticket_id or 0, _int_param(req, "comment_id"))
            # zenpy sends the marked-up text as `text`; Zendesk documents `html_body`.
            marked = str(body.get("html_body") or body.get("text") or "")
            targets = [_text_of(t) for t in re.findall(r"<redact>(.*?)</redact>", marked,
                                                         re.DOTALL)]
            if not targets:
                raise invalid_value("Wrap the text to redact in <redact> tags in `html_body`")
            _redact(comment, targets)
            return ApiResult(200, {"comment": self._render_comment(comment)})

    # -- users: https://developer.zendesk.com/api-reference/ticketing/users/users/ -------------

    def _show_user(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            return ApiResult(200, {"user": self._render_user(
                self._user(_int_param(req, "user_id")))})

    def _show_me(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            return ApiResult(200, {"user": self._render_user(self._users[self.agent_id])})

    def _create_user(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            user = self._user_from(_root(req, "user"))
            return ApiResult(201, {"user": self._render_user(user)},
                             {"location": f"{self.public_url}{API}/users/{user.id}.json"})

    def _create_or_update_user(self, req: ApiRequest) -> ApiResult:
        """Creates a user, or updates the one with the same external id or email (200).
        https://developer.zendesk.com/api-reference/ticketing/users/users/#create-or-update-user
        """
        with self._lock:
            spec = _root(req, "user")
            existing = None
            if spec.get("external_id") is not None:
                existing = next((u for u in self._users.values()
                                 if u.external_id == str(spec["external_id"])), None)
            if existing is None and spec.get("email"):
                existing = self._user_by_email(str(spec["email"]))
            if existing is None:
                return ApiResult(201, {"user": self._render_user(self._user_from(spec))})
            self._update_user(existing, spec)
            return ApiResult(200, {"user": self._render_user(existing)})

    def _user_from(self, spec: Mapping[str, Any]) -> _User:
        """Validate a `user` object and store the new user with its identities."""
        name = str(spec.get("name") or "").strip()
        if not name:
            raise record_invalid("name", "Name: is too short (minimum is 1 character)",
                                 "ValueTooShort")
        role = str(spec.get("role") or "end-user")
        if role not in ROLES:
            raise record_invalid("role", f"Role: {role} is not valid", "InvalidValue")
        email = spec.get("email")
        if email and self._user_by_email(str(email)) is not None:
            raise record_invalid("email", f"Email: {email} is already being used by "
                                          "another user", "DuplicateValue")
        external_id = spec.get("external_id")
        self._check_external_id(None if external_id is None else str(external_id), None)
        identities = [i for i in spec.get("identities") or [] if isinstance(i, dict)]
        for identity in identities:
            self._check_identity(str(identity.get("type")), str(identity.get("value") or ""))
        user = self._new_user(name, str(email) if email else None, role,
                              None if external_id is None else str(external_id))
        user.user_fields = dict(spec.get("user_fields") or {})
        user.tags = _normalise_tags(spec.get("tags") or [])
        for identity in identities:
            self._add_identity(user, str(identity["type"]), str(identity["value"]))
        return user

    def _update_user(self, user: _User, spec: Mapping[str, Any]) -> None:
        if spec.get("external_id") is not None:
            self._check_external_id(str(spec["external_id"]), user.id)
            user.external_id = str(spec["external_id"])
        if spec.get("name"):
            user.name = str(spec["name"])
        if spec.get("email") and user.email is None:
            user.email = str(spec["email"])
            self._add_identity(user, "email", user.email)
        if spec.get("role") in ROLES:
            user.role = str(spec["role"])
        user.user_fields.update(dict(spec.get("user_fields") or {}))
        for identity in spec.get("identities") or []:
            if isinstance(identity, dict) and self._user_by_identity(
                    str(identity.get("type")), str(identity.get("value"))) is None:
                self._check_identity(str(identity.get("type")), str(identity.get("value")))
                self._add_identity(user, str(identity["type"]), str(identity["value"]))
        user.updated_at = self._now()

    def _check_external_id(self, external_id: str | None, owner: int | None) -> None:
        if external_id is None:
            return
        if any(u.external_id == external_id and u.id != owner for u in self._users.values()):
            # "External id has to be unique for each user under the same account" (Users API);
            # the message is the emulator's wording.
            raise record_invalid("external_id", "External has already been taken",
                                 "DuplicateValue")

    def _check_identity(self, kind: str, value: str) -> None:
        if kind not in IDENTITY_TYPES:
            raise record_invalid("type", f"Type: {kind} is not valid", "InvalidValue")
        if not value.strip():
            raise record_invalid("value", "Value: cannot be blank", "BlankValue")
        if self._user_by_identity(kind, value) is not None:
            raise record_invalid("value", f"Value: {value} is already being used by another "
                                          "user", "DuplicateValue")

    def _new_user(self, name: str, email: str | None, role: str, external_id: str | None
                  ) -> _User:
        now = self._now()
        user = _User(next(self._object_ids), name, email, role, external_id, now, now)
        self._users[user.id] = user
        if email:
            self._add_identity(user, "email", email)
        return user

    def _add_identity(self, user: _User, kind: str, value: str) -> _Identity:
        value = value.removeprefix("@") if kind == "twitter" else value
        primary = not any(i.type == kind for i in self._identities_of(user.id))
        identity = _Identity(next(self._object_ids), user.id, kind, value, primary, self._now())
        self._identities[identity.id] = identity
        return identity

    def _search_users(self, req: ApiRequest) -> ApiResult:
        """Search Users: `external_id=` (exact) or `query=` (Zendesk search syntax).
        https://developer.zendesk.com/api-reference/ticketing/users/users/#search-users"""
        with self._lock:
            if "external_id" in req.query:
                found = [u for u in self._users.values()
                         if u.external_id == req.query["external_id"]]
            else:
                terms = parse_query(req.query.get("query", ""))
                found = [u for u in self._users.values() if self._user_matches(u, terms)]
            users = [self._render_user(u) for u in sorted(found, key=lambda u: u.id)]
            return ApiResult(200, self._page(req, "users", users))

    def _show_many_users(self, req: ApiRequest) -> ApiResult:
        """Show Many Users: `ids=` or `external_ids=`, comma-separated (zenpy's
        `users(external_id=...)` calls this)."""
        with self._lock:
            if "external_ids" in req.query:
                wanted = set(req.query["external_ids"].split(","))
                found = [u for u in self._users.values() if u.external_id in wanted]
            else:
                ids = {int(i) for i in req.query.get("ids", "").split(",") if i.isdigit()}
                found = [u for u in self._users.values() if u.id in ids]
            users = [self._render_user(u) for u in sorted(found, key=lambda u: u.id)]
            return ApiResult(200, self._page(req, "users", users))

    def _requested_tickets(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            user = self._user(_int_param(req, "user_id"))
            tickets = [self._render_ticket(t) for t in self._tickets.values()
                       if t.requester_id == user.id]
            return ApiResult(200, self._page(req, "tickets", tickets))

    # -- identities: https://developer.zendesk.com/api-reference/ticketing/users/user_identities/

    def _list_identities(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            user = self._user(_int_param(req, "user_id"))
            identities = [self._render_identity(i) for i in self._identities_of(user.id)]
            return ApiResult(200, self._page(req, "identities", identities))

    def _create_identity(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            user = self._user(_int_param(req, "user_id"))
            spec = _root(req, "identity")
            kind, value = str(spec.get("type")), str(spec.get("value") or "")
            self._check_identity(kind, value)
            identity = self._add_identity(user, kind, value)
            if kind == "email" and user.email is None:
                user.email = identity.value
            return ApiResult(201, {"identity": self._render_identity(identity)})

    # -- search: https://developer.zendesk.com/api-reference/ticketing/ticket-management/search/

    def _search(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            terms = parse_query(req.query.get("query", ""))
            kinds = {t.value.lower() for t in terms if t.keyword == "type"} or {"user", "ticket"}
            visible_before = self._now() - self.search_lag
            results: list[tuple[float, int, dict[str, Any]]] = []
            if "user" in kinds:
                results += [(u.created_at, u.id, self._render_user(u) | {"result_type": "user"})
                            for u in self._users.values()
                            if u.created_at <= visible_before and self._user_matches(u, terms)]
            if "ticket" in kinds:
                results += [(t.created_at, t.id,
                             self._render_ticket(t) | {"result_type": "ticket"})
                            for t in self._tickets.values()
                            if t.created_at <= visible_before
                            and self._ticket_matches(t, terms)]
            ordered = _order_results(results, terms)
            page = self._page(req, "results", ordered)
            page["facets"] = None
            return ApiResult(200, page)

    def _user_matches(self, user: _User, terms: Sequence[SearchTerm]) -> bool:
        values = {i.type: i.value.lower() for i in self._identities_of(user.id)}
        everything = [user.name.lower(), (user.email or "").lower(), *values.values()]
        checks: dict[str, Callable[[str], bool]] = {
            "email": lambda v: any(i.type == "email" and i.value.lower() == v
                                   for i in self._identities_of(user.id)),
            "twitter": lambda v: any(i.type == "twitter" and i.value.lower() == v.lstrip("@")
                                     for i in self._identities_of(user.id)),
            "external_id": lambda v: (user.external_id or "").lower() == v,
            "name": lambda v: v in user.name.lower(),
            "role": lambda v: user.role.replace("-", "") == v.replace("-", "").replace("_", ""),
            "tags": lambda v: v in user.tags,
            "tag": lambda v: v in user.tags,
            "": lambda v: any(v in text for text in everything),
        }
        return _all_terms(terms, checks)

    def _ticket_matches(self, ticket: _Ticket, terms: Sequence[SearchTerm]) -> bool:
        def person(user_id: int | None, value: str) -> bool:
            if value == "me":
                return user_id == self.agent_id
            if value == "none":
                return user_id is None
            user = self._users.get(user_id) if user_id is not None else None
            return user is not None and (str(user.id) == value
                                         or (user.email or "").lower() == value)
        text = " ".join([ticket.subject or "", *(self._comments[c].body
                                                 for c in ticket.comment_ids)]).lower()
        checks: dict[str, Callable[[str], bool]] = {
            "requester": lambda v: person(ticket.requester_id, v),
            "assignee": lambda v: person(ticket.assignee_id, v),
            "submitter": lambda v: person(ticket.submitter_id, v),
            "tags": lambda v: v in ticket.tags,
            "tag": lambda v: v in ticket.tags,
            "external_id": lambda v: (ticket.external_id or "").lower() == v,
            "subject": lambda v: v in (ticket.subject or "").lower(),
            "brand": lambda v: str(ticket.brand_id) == v,
            "group": lambda v: str(ticket.group_id) == v,
            "": lambda v: v in text,
        }
        for term in terms:
            if term.keyword == "status":
                held = _status_term(ticket.status, term)
                if held == term.negated:
                    return False
        return _all_terms([t for t in terms if t.keyword != "status"], checks)

    # -- webhooks: https://developer.zendesk.com/api-reference/webhooks/webhooks-api/webhooks/ --

    def _webhook(self, req: ApiRequest) -> _Webhook:
        hook = self._webhooks.get(req.path_params.get("webhook_id", ""))
        if hook is None:
            raise _webhook_error(404, "RecordNotFound", "Webhook not found")
        return hook

    def _list_webhooks(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            hooks = list(self._webhooks.values())
            if "filter[name_contains]" in req.query:
                hooks = [h for h in hooks
                         if req.query["filter[name_contains]"].lower() in h.name.lower()]
            if "filter[status]" in req.query:
                hooks = [h for h in hooks if h.status == req.query["filter[status]"]]
            rendered = [self._render_webhook(h) for h in hooks]
        query = dict(req.query) | {"page[size]": req.query.get("page[size]", "100")}
        return ApiResult(200, self._page(replace(req, query=query), "webhooks", rendered))

    def _create_webhook(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            spec = _root(req, "webhook")
            fields = _webhook_fields(spec, require=True)
            now = self._now()
            hook = _Webhook(id=new_ulid(now), signing_secret=_new_secret(), created_at=now,
                            created_by=str(self.agent_id), **fields)
            self._webhooks[hook.id] = hook
            log.info("Zendesk emulator: created webhook %s", hook.id,
                     extra={"endpoint": hook.endpoint})
            return ApiResult(201, {"webhook": self._render_webhook(hook)})

    def _show_webhook(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            return ApiResult(200, {"webhook": self._render_webhook(self._webhook(req))})

    def _replace_webhook(self, req: ApiRequest) -> ApiResult:
        return self._change_webhook(req, require=True)

    def _patch_webhook(self, req: ApiRequest) -> ApiResult:
        return self._change_webhook(req, require=False)

    def _change_webhook(self, req: ApiRequest, require: bool) -> ApiResult:
        with self._lock:
            hook = self._webhook(req)
            for name, value in _webhook_fields(_root(req, "webhook"), require).items():
                setattr(hook, name, value)
            hook.updated_at, hook.updated_by = self._now(), str(self.agent_id)
            return ApiResult(204, None)

    def _delete_webhook(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            del self._webhooks[self._webhook(req).id]
            return ApiResult(204, None)

    def _show_secret(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            secret = self._webhook(req).signing_secret
        return ApiResult(200, {"signing_secret": {"algorithm": "SHA256", "secret": secret}})

    def _reset_secret(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            hook = self._webhook(req)
            hook.signing_secret = _new_secret()
            return ApiResult(201, {"signing_secret": {"algorithm": "SHA256",
                                                      "secret": hook.signing_secret}})

    # -- triggers: https://developer.zendesk.com/api-reference/ticketing/business-rules/triggers/

    def _trigger(self, req: ApiRequest) -> _Trigger:
        trigger = self._triggers.get(_int_param(req, "trigger_id"))
        if trigger is None:
            raise not_found()
        return trigger

    def _ordered_triggers(self) -> list[_Trigger]:
        return sorted(self._triggers.values(), key=lambda t: (t.position, t.id))

    def _list_triggers(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            triggers = self._ordered_triggers()
            if "active" in req.query:
                wanted = req.query["active"].lower() == "true"
                triggers = [t for t in triggers if t.active == wanted]
            rendered = [self._render_trigger(t) for t in triggers]
            return ApiResult(200, self._page(req, "triggers", rendered))

    def _search_triggers(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            words = req.query.get("query", "").lower().split()
            triggers = [t for t in self._ordered_triggers()
                        if all(w in t.title.lower() for w in words)]
            if "active" in req.query:
                wanted = req.query["active"].lower() == "true"
                triggers = [t for t in triggers if t.active == wanted]
            rendered = [self._render_trigger(t) for t in triggers]
            # "Offset pagination only" for trigger search.
            query = {k: v for k, v in req.query.items() if not k.startswith("page[")}
            return ApiResult(200, self._page(replace(req, query=query), "triggers", rendered))

    def _create_trigger(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            spec = _root(req, "trigger")
            title = str(spec.get("title") or "").strip()
            if not title:
                raise record_invalid("title", "Title: cannot be blank", "BlankValue")
            conditions, actions = _rule_parts(spec)
            now = self._now()
            trigger = _Trigger(id=next(self._object_ids), title=title,
                               active=bool(spec.get("active", True)), conditions=conditions,
                               actions=actions,
                               position=int(spec.get("position") or len(self._triggers) + 1),
                               created_at=now, updated_at=now,
                               description=spec.get("description"),
                               category_id=_str_or_none(spec.get("category_id")))
            self._triggers[trigger.id] = trigger
            return ApiResult(201, {"trigger": self._render_trigger(trigger)})

    def _show_trigger(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            return ApiResult(200, {"trigger": self._render_trigger(self._trigger(req))})

    def _update_trigger(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            trigger = self._trigger(req)
            spec = _root(req, "trigger")
            # "Updating a condition or action updates both the conditions and actions arrays,
            # clearing all existing values of both arrays."
            if "conditions" in spec or "actions" in spec:
                trigger.conditions, trigger.actions = _rule_parts(spec)
            if spec.get("title"):
                trigger.title = str(spec["title"])
            for name in ("active", "description", "position"):
                if name in spec:
                    setattr(trigger, name, spec[name])
            trigger.updated_at = self._now()
            return ApiResult(200, {"trigger": self._render_trigger(trigger)})

    def _delete_trigger(self, req: ApiRequest) -> ApiResult:
        with self._lock:
            del self._triggers[self._trigger(req).id]
            return ApiResult(204, None)

    # -- triggers at work: rendering and delivering webhook notifications --------------------

    def _run_triggers(self, ticket: _Ticket, update_type: str, previous_status: str | None,
                      comment: _Comment | None, current_user: int) -> None:
        update = TicketUpdate(update_type, ticket.status, previous_status, tuple(ticket.tags),
                              None if comment is None else comment.public,
                              self._users[current_user].role)
        for trigger in self._ordered_triggers():
            if trigger.active and conditions_match(trigger.conditions, update):
                for action in trigger.actions:
                    self._act(trigger, action, ticket, current_user)

    def _act(self, trigger: _Trigger, action: Mapping[str, Any], ticket: _Ticket,
             current_user: int) -> None:
        if action.get("field") != "notification_webhook":
            log.warning("Zendesk emulator: trigger action %r is not emulated", action.get("field"))
            return
        value = action.get("value")
        if not isinstance(value, list) or not value:
            return
        hook = self._webhooks.get(str(value[0]))
        if hook is None or hook.status != "active":
            return
        template = str(value[1]) if len(value) > 1 else ""
        invocation = self._invocation(hook, trigger, ticket, current_user, template)
        threading.Thread(target=self._deliver, args=(invocation,), daemon=True,
                         name=f"zendesk-emulator-webhook-{hook.id}").start()

    def _invocation(self, hook: _Webhook, trigger: _Trigger, ticket: _Ticket,
                    current_user: int, template: str) -> _Invocation:
        values = self._placeholder_values(ticket, current_user)
        fmt = hook.request_format
        url, body = hook.endpoint, b""
        if hook.http_method in ("POST", "PUT", "PATCH"):
            escape = (json_escape if self.escape_json else None) if fmt == "json" else (
                (lambda s: html_escape(s, quote=True)) if fmt == "xml" else None)
            body = render_placeholders(template, values, escape).encode()
        elif template:
            url = _with_params(url, template, values)
        invocation_id = str(next(self._invocation_ids))
        timestamp = webhook_timestamp(self._now())
        content_types = {"json": "application/json", "xml": "application/xml",
                         "form_encoded": "application/x-www-form-urlencoded"}
        headers = {
            **hook.custom_headers,
            "content-type": content_types.get(fmt, "application/json"),
            "user-agent": "Zendesk Webhook",
            "x-zendesk-account-id": str(self.account_id),
            "x-zendesk-webhook-id": hook.id,
            "x-zendesk-webhook-invocation-id": invocation_id,
            "x-zendesk-webhook-signature": sign_webhook(hook.signing_secret, timestamp, body),
            "x-zendesk-webhook-signature-timestamp": timestamp,
            **_auth_headers(hook.authentication),
        }
        return _Invocation(hook.id, trigger.id, ticket.id, hook.http_method, url, headers, body)

    def _placeholder_values(self, ticket: _Ticket, current_user: int) -> dict[str, str]:
        """The placeholders a trigger can use, by name, rendered as text."""
        values = {
            "ticket.id": str(ticket.id), "ticket.title": ticket.subject or "",
            "ticket.description": ticket.description,
            "ticket.status": ticket.status.title(), "ticket.priority": (ticket.priority or
                                                                         "").title(),
            "ticket.ticket_type": (ticket.type or "").title(),
            "ticket.tags": " ".join(ticket.tags), "ticket.external_id": ticket.external_id or "",
            "ticket.via": ticket.via["channel"].title(),
            "ticket.url": f"{self.subdomain}.zendesk.com/agent/tickets/{ticket.id}",
            "ticket.link": f"{self.public_url}/agent/tickets/{ticket.id}",
            "ticket.created_at_with_timestamp": _iso(ticket.created_at),
            "ticket.updated_at_with_timestamp": _iso(ticket.updated_at),
            "ticket.account": self.subdomain,
        }
        for prefix, user_id in (("ticket.requester", ticket.requester_id),
                                ("ticket.assignee", ticket.assignee_id),
                                ("ticket.submitter", ticket.submitter_id),
                                ("current_user", current_user)):
            values |= self._user_values(prefix, user_id)
        comments = [self._comments[c] for c in ticket.comment_ids]
        public = [c for c in comments if c.public]
        for prefix, chosen in (("ticket.latest_comment", comments),
                               ("ticket.latest_public_comment", public)):
            values |= self._comment_values(prefix, chosen[-1] if chosen else None)
        return values

    def _user_values(self, prefix: str, user_id: int | None) -> dict[str, str]:
        user = self._users.get(user_id) if user_id is not None else None
        if user is None:
            return {}
        first, _, last = user.name.partition(" ")
        return {f"{prefix}.id": str(user.id), f"{prefix}.name": user.name,
                f"{prefix}.first_name": first, f"{prefix}.last_name": last,
                f"{prefix}.email": user.email or "", f"{prefix}.external_id":
                    user.external_id or "", f"{prefix}.role": user.role.replace("-", "_")}

    def _comment_values(self, prefix: str, comment: _Comment | None) -> dict[str, str]:
        if comment is None:
            return {}
        values = {prefix: comment.body, f"{prefix}_html": comment.html_body,
                  f"{prefix}.id": str(comment.id), f"{prefix}.value": comment.body,
                  f"{prefix}.value_rich": comment.html_body,
                  f"{prefix}.is_public": "true" if comment.public else "false",
                  f"{prefix}.created_at_with_timestamp": _iso(comment.created_at)}
        return values | self._user_values(f"{prefix}.author", comment.author_id)

    def _deliver(self, invocation: _Invocation) -> None:
        """Send one webhook request (no lock held) and record the outcome."""
        outcome: dict[str, Any] = {
            "webhook_id": invocation.webhook_id, "trigger_id": invocation.trigger_id,
            "ticket_id": invocation.ticket_id, "method": invocation.method,
            "endpoint": invocation.url, "headers": dict(invocation.headers),
            "body": invocation.body.decode(), "status": None, "error": None}
        try:
            answer = self._http.request(invocation.method, invocation.url,
                                        data=invocation.body or None,
                                        headers=dict(invocation.headers),
                                        timeout=self.delivery_timeout)
            outcome["status"] = answer.status_code
        except requests.RequestException as err:
            outcome["error"] = str(err)
        log.info("Zendesk emulator: webhook %s answered %s", invocation.webhook_id,
                 outcome["status"] or outcome["error"],
                 extra={"ticket_id": invocation.ticket_id})
        with self._delivered:
            self._deliveries.append(outcome)
            self._delivered.notify_all()

    # -- controls (not Zendesk) ------------------------------------------------------------------

    def add_user(self, name: str, *, email: str | None = None, role: str = "end-user",
                 external_id: str | None = None, twitter: str | None = None,
                 user_fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Make a user (an end user unless `role` says otherwise); returns it as Zendesk shows it.

        Raises:
            ZendeskApiError: 422 for a duplicate email, external id or twitter handle.
        """
        spec: dict[str, Any] = {"name": name, "email": email, "role": role,
                                "external_id": external_id, "user_fields": user_fields or {},
                                "identities": [{"type": "twitter", "value": twitter}]
                                if twitter else []}
        with self._lock:
            return self._render_user(self._user_from(spec))

    def add_ticket(self, *, requester_id: int, body: str, subject: str | None = None,
                   status: str = "open", tags: Iterable[str] = (), public: bool = True,
                   external_id: str | None = None) -> dict[str, Any]:
        """A ticket the requester opened on the web (its triggers run); returns the ticket.

        Raises:
            ZendeskApiError: 422 for an unknown requester or an invalid status.
        """
        spec = {"subject": subject, "requester_id": requester_id, "submitter_id": requester_id,
                "status": status, "tags": list(tags), "external_id": external_id,
                "comment": {"body": body, "public": public}}
        with self._lock:
            ticket, _ = self._open_ticket(spec, requester_id, "web")
            return self._render_ticket(ticket)

    def agent_comment(self, ticket_id: int, body: str, public: bool = True,
                      author_id: int | None = None,
                      tags: Iterable[str] | None = None) -> dict[str, Any]:
        """The agent (or `author_id`) comments on a ticket, as in Zendesk's agent workspace.

        `tags` replaces the ticket's tags in the same update, as a macro does. Triggers run,
        so a matching trigger's webhook fires. Returns the new comment.

        Raises:
            ZendeskApiError: 404 for an unknown ticket, 422 for a closed one.
        """
        author = author_id or self.agent_id
        return self._comment_as(ticket_id, {"body": body, "public": public,
                                            "author_id": author}, author, tags)

    def requester_comment(self, ticket_id: int, body: str) -> dict[str, Any]:
        """The ticket's requester replies (public); a pending or solved ticket reopens.

        Raises:
            ZendeskApiError: 404 for an unknown ticket, 422 for a closed one.
        """
        with self._lock:
            requester = self._ticket(ticket_id).requester_id
        return self._comment_as(ticket_id, {"body": body, "public": True}, requester)

    def _comment_as(self, ticket_id: int, comment: dict[str, Any], user_id: int,
                    tags: Iterable[str] | None = None) -> dict[str, Any]:
        with self._lock:
            ticket = self._ticket(ticket_id)
            change: dict[str, Any] = {"comment": comment}
            if tags is not None:
                change["tags"] = list(tags)
            self._change_ticket(ticket, change, user_id)
            return self._render_comment(self._comments[ticket.comment_ids[-1]])

    def set_tags(self, ticket_id: int, tags: Iterable[str]) -> dict[str, Any]:
        """The agent replaces a ticket's tags (triggers run); returns the ticket.

        Raises:
            ZendeskApiError: 404 for an unknown ticket.
        """
        with self._lock:
            ticket = self._ticket(ticket_id)
            self._change_ticket(ticket, {"tags": list(tags)}, self.agent_id)
            return self._render_ticket(ticket)

    def set_status(self, ticket_id: int, status: str) -> dict[str, Any]:
        """The agent sets a ticket's status (triggers run); returns the ticket.

        Raises:
            ZendeskApiError: 404 for an unknown ticket, 422 for a closed one or a bad status.
        """
        with self._lock:
            ticket = self._ticket(ticket_id)
            self._change_ticket(ticket, {"status": status}, self.agent_id)
            return self._render_ticket(ticket)

    def close_ticket(self, ticket_id: int) -> dict[str, Any]:
        """Close a ticket as Zendesk's close automation does (no triggers); returns it.

        Raises:
            ZendeskApiError: 404 for an unknown ticket.
        """
        with self._lock:
            ticket = self._ticket(ticket_id)
            ticket.status, ticket.updated_at = "closed", self._now()
            return self._render_ticket(ticket)

    @property
    def tickets(self) -> list[dict[str, Any]]:
        """Every ticket, oldest first, as Zendesk shows it."""
        with self._lock:
            return [self._render_ticket(t) for t in self._tickets.values()]

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        """One ticket as Zendesk shows it.

        Raises:
            ZendeskApiError: 404 for an unknown ticket.
        """
        with self._lock:
            return self._render_ticket(self._ticket(ticket_id))

    def comments(self, ticket_id: int) -> list[dict[str, Any]]:
        """A ticket's comments, oldest first.

        Raises:
            ZendeskApiError: 404 for an unknown ticket.
        """
        with self._lock:
            return [self._render_comment(self._comments[c])
                    for c in self._ticket(ticket_id).comment_ids]

    @property
    def users(self) -> list[dict[str, Any]]:
        """Every user, the agent first."""
        with self._lock:
            return [self._render_user(u) for u in self._users.values()]

    def identities(self, user_id: int) -> list[dict[str, Any]]:
        """A user's identities."""
        with self._lock:
            return [self._render_identity(i) for i in self._identities_of(user_id)]

    def webhooks(self) -> list[dict[str, Any]]:
        """The webhooks, with their signing secrets (which the API shows only on request)."""
        with self._lock:
            return [self._render_webhook(h) | {"signing_secret": h.signing_secret}
                    for h in self._webhooks.values()]

    def triggers(self) -> list[dict[str, Any]]:
        """The triggers in firing order."""
        with self._lock:
            return [self._render_trigger(t) for t in self._ordered_triggers()]

    @property
    def calls(self) -> dict[str, int]:
        """How many calls each Zendesk endpoint received (answered or refused)."""
        with self._lock:
            return dict(self._calls)

    def fail_next(self, endpoint: str, count: int = 1, status: int = 429,
                  retry_after: int = 60) -> None:
        """Make the next `count` calls to `endpoint` (e.g. "PUT /api/v2/tickets/{ticket_id}")
        fail with `status`; a 429 (or 503) carries `Retry-After: retry_after`.

        Raises:
            ValueError: for an endpoint the emulator does not serve, or an unusable status.
        """
        if endpoint not in ROUTES:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(ROUTES)}")
        if status not in _FAILURE_STATUSES or count < 0 or retry_after < 0:
            raise ValueError(f"status must be one of {_FAILURE_STATUSES}, count >= 0")
        with self._lock:
            self._failures[endpoint] = _Failure(count, status, retry_after)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook request made so far, with its answer's status (or the error)."""
        with self._lock:
            return [dict(d) for d in self._deliveries]

    def hold_answers(self, endpoint: str, seconds: float) -> None:
        """Do the work of `endpoint` (e.g. "POST /api/v2/tickets"), then hold the answer back
        for `seconds`: a client killed meanwhile never learns that its call succeeded."""
        if endpoint not in ROUTES:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        self._held[endpoint] = seconds

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least `count` webhook requests have been answered; returns them all.

        Raises:
            TimeoutError: when fewer than `count` were answered within `timeout` seconds.
        """
        with self._delivered:
            if not self._delivered.wait_for(lambda: len(self._deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self._deliveries)} of {count} webhook deliveries "
                                   f"after {timeout} s")
            return [dict(d) for d in self._deliveries]

    def helpdesk_settings(self, base_url: str, webhook_secret: str | None = None
                          ) -> ZendeskSettings:
        """Settings for a deskbridge Zendesk helpdesk that talks to this emulator."""
        return ZendeskSettings.model_validate({
            "type": "zendesk", "subdomain": self.subdomain, "email": self.credentials.email,
            "token": self.credentials.token, "webhook_secret": webhook_secret,
            "base_url": base_url})


# ---------------------------------------------------------------------------------------------
# Small pure helpers of the endpoints above.
# ---------------------------------------------------------------------------------------------

def _clamp(raw: str | None, default: int, high: int = 100) -> int:
    try:
        return min(max(int(raw), 1), high) if raw is not None else default
    except ValueError:
        return default


def _encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"p{position}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return max(int(text.removeprefix("p")), 0)
    except ValueError:
        raise invalid_value("Invalid cursor") from None


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise record_invalid("status", f"Status: {status} is not valid", "InvalidValue")


def _redact(comment: _Comment, targets: Iterable[str]) -> None:
    for text in targets:
        if text:
            mark = REDACTION_MARK * len(text)
            comment.body = comment.body.replace(text, mark)
            comment.html_body = comment.html_body.replace(html_escape(text, quote=False), mark)


def _all_terms(terms: Sequence[SearchTerm], checks: Mapping[str, Callable[[str], bool]]
               ) -> bool:
    for term in terms:
        if term.keyword in ("type", "order_by", "sort"):
            continue
        check = checks.get(term.keyword)
        if check is None or check(term.value.lower()) == term.negated:
            return False
    return True


def _status_term(status: str, term: SearchTerm) -> bool:
    wanted = term.value.lower()
    if wanted not in STATUSES:
        return False
    return _compare(term.operator, _status_rank(status), _status_rank(wanted))


def _order_results(results: list[tuple[float, int, dict[str, Any]]],
                   terms: Sequence[SearchTerm]) -> list[dict[str, Any]]:
    order_by = next((t.value for t in terms if t.keyword == "order_by"), "created_at")
    descending = any(t.keyword == "sort" and t.value.lower() == "desc" for t in terms)
    key: Callable[[tuple[float, int, dict[str, Any]]], Any] = (
        (lambda r: (r[2].get("updated_at", ""), r[1])) if order_by == "updated_at"
        else (lambda r: (r[0], r[1])))
    return [r[2] for r in sorted(results, key=key, reverse=descending)]


def _webhook_fields(spec: Mapping[str, Any], require: bool) -> dict[str, Any]:
    """The stored fields from a `webhook` object; `require` demands Zendesk's mandatory ones."""
    mandatory = ("name", "endpoint", "http_method", "request_format", "status")
    missing = [name for name in mandatory if require and not spec.get(name)]
    if missing:
        raise _webhook_error(400, "InvalidValue", f"Missing required fields: {missing}")
    fields: dict[str, Any] = {}
    for name in (*mandatory, "description"):
        if spec.get(name) is not None:
            fields[name] = str(spec[name])
    if "http_method" in fields:
        fields["http_method"] = fields["http_method"].upper()
        if fields["http_method"] not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            raise _webhook_error(400, "InvalidValue", "http_method is not valid")
    if fields.get("request_format", "json") not in ("json", "xml", "form_encoded"):
        raise _webhook_error(400, "InvalidValue", "request_format is not valid")
    if fields.get("status", "active") not in ("active", "inactive"):
        raise _webhook_error(400, "InvalidValue", "status is not valid")
    if "subscriptions" in spec or require:
        fields["subscriptions"] = [str(s) for s in spec.get("subscriptions") or []]
    if "authentication" in spec:
        auth = spec.get("authentication")
        fields["authentication"] = dict(auth) if isinstance(auth, dict) else None
    if "custom_headers" in spec:
        fields["custom_headers"] = {str(k): str(v)
                                    for k, v in (spec.get("custom_headers") or {}).items()}
    return fields


def _new_secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _auth_headers(authentication: Mapping[str, Any] | None) -> dict[str, str]:
    # https://developer.zendesk.com/documentation/webhooks/webhook-security-and-authentication/
    if not authentication:
        return {}
    data = authentication.get("data") or {}
    kind = authentication.get("type")
    if kind == "basic_auth":
        pair = f"{data.get('username', '')}:{data.get('password', '')}".encode()
        return {"authorization": "Basic " + base64.b64encode(pair).decode()}
    if kind == "bearer_token":
        return {"authorization": f"Bearer {data.get('token', '')}"}
    if kind == "api_key" and authentication.get("add_position", "header") == "header":
        return {str(data.get("name", "")): str(data.get("value", ""))}
    return {}


def _with_params(url: str, template: str, values: Mapping[str, str]) -> str:
    """A GET/DELETE webhook's URL with its `[[key, value], ...]` parameters rendered."""
    try:
        pairs = json.loads(template)
    except ValueError:
        return url
    params = [(str(k), render_placeholders(str(v), values)) for k, v in pairs
              if isinstance(pairs, list)]
    return url + ("&" if "?" in url else "?") + urlencode(params) if params else url


def _rule_parts(spec: Mapping[str, Any]) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    conditions = spec.get("conditions") if isinstance(spec.get("conditions"), dict) else {}
    assert isinstance(conditions, dict)
    actions = [dict(a) for a in spec.get("actions") or [] if isinstance(a, dict)]
    if not actions:
        # Wording as reported from a live account: "422 Trigger must contain at least one
        # action" (a public project's runbook, index id 57969421323).
        raise record_invalid("base", "Trigger must contain at least one action", "InvalidValue")
    return ({"all": list(conditions.get("all") or []), "any": list(conditions.get("any") or [])},
            actions)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# The Flask app: thin views over ZendeskEmulator.
# ---------------------------------------------------------------------------------------------

def _response(result: ApiResult) -> Response:
    if result.body is None:
        data = b""
    elif isinstance(result.body, str):
        data = result.body.encode()
    else:
        data = json.dumps(result.body, ensure_ascii=False).encode()
    response = Response(data, status=f"{result.status} {HTTPStatus(result.status).phrase}",
                        content_type=result.content_type if result.body is not None else None)
    if result.body is None:
        response.headers.pop("Content-Type", None)
    response.headers.update(dict(result.headers))
    response.headers["x-zendesk-api-version"] = "v2"
    response.headers["server"] = SERVER_HEADER
    return response


def _api_view(emulator: ZendeskEmulator, route: str) -> Callable[..., Response]:
    def view(**path_params: Any) -> Response:
        req = ApiRequest(route, {k: str(v) for k, v in path_params.items()},
                         request.args.to_dict(), request.get_data(),
                         {k.lower(): v for k, v in request.headers.items()},
                         request.host_url.rstrip("/"))
        return _response(emulator.handle(req, request.headers.get("Authorization")))
    return view


def _flask_rules(route: str) -> tuple[str, list[str]]:
    method, path = route.split(" ", 1)
    rule = re.sub(r"\{(\w+)\}",
                  lambda m: f"<{m.group(1)}>" if m.group(1) == "webhook_id"
                  else f"<int:{m.group(1)}>", path)
    return method, [rule] if "/webhooks" in path else [rule, rule + ".json"]


def _register_controls(app: Flask, emulator: ZendeskEmulator) -> None:
    """The /_emulator/ routes: the Python controls over HTTP, for the demo and other processes."""

    @app.get("/_emulator/calls")
    def calls() -> Response:
        return _response(ApiResult(200, {"calls": emulator.calls}))

    @app.post("/_emulator/users")
    def add_user() -> Response:
        b = control_body()
        user = emulator.add_user(str(b.get("name", "")), email=b.get("email"),
                                 role=str(b.get("role", "end-user")),
                                 external_id=b.get("external_id"), twitter=b.get("twitter"),
                                 user_fields=b.get("user_fields"))
        return _response(ApiResult(201, {"user": user}))

    @app.get("/_emulator/users")
    def users() -> Response:
        return _response(ApiResult(200, {"users": emulator.users}))

    @app.post("/_emulator/tickets")
    def add_ticket() -> Response:
        b = control_body()
        ticket = emulator.add_ticket(requester_id=int(b.get("requester_id", 0)),
                                     body=str(b.get("body", "")), subject=b.get("subject"),
                                     status=str(b.get("status", "open")),
                                     tags=list(b.get("tags") or []),
                                     public=bool(b.get("public", True)),
                                     external_id=b.get("external_id"))
        return _response(ApiResult(201, {"ticket": ticket}))

    @app.get("/_emulator/tickets")
    def tickets() -> Response:
        return _response(ApiResult(200, {"tickets": emulator.tickets}))

    @app.get("/_emulator/tickets/<int:ticket_id>/comments")
    def comments(ticket_id: int) -> Response:
        return _response(ApiResult(200, {"comments": emulator.comments(ticket_id)}))

    @app.post("/_emulator/tickets/<int:ticket_id>/agent_comment")
    def agent_comment(ticket_id: int) -> Response:
        b = control_body()
        comment = emulator.agent_comment(ticket_id, str(b.get("body", "")),
                                         public=bool(b.get("public", True)),
                                         author_id=b.get("author_id"), tags=b.get("tags"))
        return _response(ApiResult(201, {"comment": comment}))

    @app.post("/_emulator/tickets/<int:ticket_id>/requester_comment")
    def requester_comment(ticket_id: int) -> Response:
        comment = emulator.requester_comment(ticket_id, str(control_body().get("body", "")))
        return _response(ApiResult(201, {"comment": comment}))

    @app.put("/_emulator/tickets/<int:ticket_id>/tags")
    def set_tags(ticket_id: int) -> Response:
        ticket = emulator.set_tags(ticket_id, list(control_body().get("tags") or []))
        return _response(ApiResult(200, {"ticket": ticket}))

    @app.put("/_emulator/tickets/<int:ticket_id>/status")
    def set_status(ticket_id: int) -> Response:
        ticket = emulator.set_status(ticket_id, str(control_body().get("status", "")))
        return _response(ApiResult(200, {"ticket": ticket}))

    @app.post("/_emulator/tickets/<int:ticket_id>/close")
    def close(ticket_id: int) -> Response:
        return _response(ApiResult(200, {"ticket": emulator.close_ticket(ticket_id)}))

    @app.post("/_emulator/fail")
    def fail() -> Response:
        b = control_body()
        emulator.fail_next(str(b.get("endpoint")), int(b.get("count", 1)),
                           int(b.get("status", 429)), int(b.get("retry_after", 60)))
        return _response(ApiResult(200, {"ok": True}))

    @app.get("/_emulator/deliveries")
    def deliveries() -> Response:
        return _response(ApiResult(200, {"deliveries": emulator.deliveries()}))

    @app.get("/_emulator/webhooks")
    def webhooks() -> Response:
        return _response(ApiResult(200, {"webhooks": emulator.webhooks(),
                                         "triggers": emulator.triggers()}))


def create_app(emulator: ZendeskEmulator | None = None) -> Flask:
    """The emulator as a Flask app: Zendesk's /api/v2 routes plus the /_emulator/ controls."""
    emulator = emulator or ZendeskEmulator()
    app = Flask("deskbridge_zendesk_emulator")
    app.extensions["zendesk_emulator"] = emulator
    for route in ROUTES:
        method, rules = _flask_rules(route)
        view = _api_view(emulator, route)
        for rule in rules:
            app.add_url_rule(rule, endpoint=f"{route} {rule}", view_func=view, methods=[method])
    _register_controls(app, emulator)

    @app.errorhandler(ZendeskApiError)
    def api_error(err: ZendeskApiError) -> Response:
        return _response(err.result)

    @app.errorhandler(ValueError)
    def bad_control(err: ValueError) -> Response:
        return _response(ApiResult(400, {"error": str(err), "emulator": SERVER_HEADER}))

    @app.errorhandler(404)
    def not_found_route(err: Exception) -> Response:
        return _response(ApiResult(404, {"error": "InvalidEndpoint", "description": "Not found"}))

    @app.errorhandler(405)
    def not_allowed(err: Exception) -> Response:
        return _response(ApiResult(405, {"error": "InvalidEndpoint",
                                         "description": "Method not allowed"}))
    return app


class ZendeskEmulatorRequestHandler(BaseRequestHandler):
    """werkzeug's request handler for the Zendesk emulator (see integrations/emulation.py)."""

    label = "Zendesk emulator"


def serve(port: int = 0, host: str = LOOPBACK,
          emulator: ZendeskEmulator | None = None) -> None:
    """Serve the emulator on loopback until SIGINT or SIGTERM; print its base URL first.

    The first line of standard output is `http://127.0.0.1:PORT` (flushed at once).

    Raises:
        ValueError: when asked to listen anywhere but 127.0.0.1.
    """
    emulator = emulator or ZendeskEmulator()
    zd = emulator
    serve_app(create_app(zd), port=port, host=host, handler=ZendeskEmulatorRequestHandler,
              banner=lambda url: f"Zendesk emulator (not Zendesk) for {zd.subdomain}.zendesk.com"
                                 f" at {url}; agent {zd.credentials.email}, API token "
                                 f"{zd.credentials.token}")




# ---------------------------------------------------------------------------------------------
# zenpy, pointed at the emulator.
# zenpy builds every URL as https://{subdomain}.zendesk.com/api/v2/... ; its only overrides are
# the process-wide ZENPY_FORCE_SCHEME / ZENPY_FORCE_NETLOC environment variables
# (zenpy/lib/api.py BaseApi._build_url), which would redirect every Zenpy in the process. A
# session that rebases the account's URLs is local to one client instead.
# ---------------------------------------------------------------------------------------------

def _raise_on_rate_limit(response: requests.Response, *args: Any,
                         **kwargs: Any) -> requests.Response:
    """Raise zenpy's APIException for a 429 before zenpy sees it (zenpy would sleep out the
    whole Retry-After, one second at a time: zenpy/lib/api.py BaseApi._call_api)."""
    if response.status_code == 429:
        from zenpy.lib.exception import APIException
        raise APIException(response.text, response=response)
    return response


def zenpy_client(base_url: str, subdomain: str = "acme", email: str = Credentials.email,
                 token: str = Credentials.token, *, raise_on_rate_limit: bool = True,
                 ratelimit_budget: int | None = None, disable_cache: bool = True,
                 timeout: float = 10.0) -> Any:
    """A real `zenpy.Zenpy` whose requests for https://{subdomain}.zendesk.com go to `base_url`.

    With `raise_on_rate_limit` a 429 raises `zenpy.lib.exception.APIException` at once (its
    `response` carries `Retry-After`); without it zenpy sleeps unless `ratelimit_budget` is
    spent (`ratelimit_budget=0` makes it raise `RatelimitBudgetExceeded` instead of sleeping,
    without the response). zenpy's object cache is off by default, because tests change the
    emulator's state behind zenpy's back.
    """
    from zenpy import Zenpy
    prefix = f"https://{subdomain}.zendesk.com"
    session = loopback_session()
    rebase_session(session, base_url, prefix)
    if raise_on_rate_limit:
        session.hooks["response"].append(_raise_on_rate_limit)
    return Zenpy(subdomain=subdomain, email=email, token=token, session=session,
                 timeout=timeout, ratelimit_budget=ratelimit_budget,
                 disable_cache=disable_cache)
