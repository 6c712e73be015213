"""The Zendesk adapter: deskbridge's helpdesk interface as zenpy (and two plain requests) calls.

- Reads are fresh: a ticket by id (never through search, whose index lags by minutes).
- A new ticket is created with an `Idempotency-Key` derived from the message, so a retried
  create returns the first ticket instead of making a second one. zenpy cannot send headers,
  so that one call goes through the same requests session with plain requests.
  https://developer.zendesk.com/api-reference/ticketing/introduction/#idempotency
- A customer's new requester is created (or updated) by `external_id` `x:<X user id>` with a
  `twitter` identity, so a retry finds the same user. A sender is found by that external_id,
  else by a `twitter` identity (the handle), read fresh.
- Rate limits never block a thread: on a 429 the session raises `RateLimited` with Zendesk's
  `Retry-After` before zenpy could sleep, and the adapter paces itself by deferring instead
  of waiting: to the plan's requests-per-minute in this process, and to what Zendesk's
  headers say is left of the account's minute across all processes and apps (`Pacer`).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import requests
from zenpy import Zenpy
from zenpy.lib.api_objects import Comment
from zenpy.lib.api_objects import Ticket as ZenpyTicket
from zenpy.lib.exception import APIException, RecordNotFoundException, ZenpyException

from integrations.errors import ProviderError, RateLimited
from integrations.events import SocialUser
from integrations.helpdesk import (
    DeletionNotice,
    HelpdeskComment,
    HelpdeskUser,
    NewComment,
    NewTicket,
    Ticket,
    WriteResult,
)
from integrations.payload import is_id
from integrations.rebasing import rebase_session
from integrations.zendesk.render import render_comment, render_deletion, write_marker
from integrations.zendesk.settings import ZendeskSettings

T = TypeVar("T")
PROVIDER = "zendesk"
# A post whose author X did not send (a page read without expansions) is kept, but must not
# be filed under a made-up person: every such ticket has this one placeholder requester, and
# since its messages are never verified, nothing is ever sent to it.
UNKNOWN_AUTHOR_ID = "unknown-author"
UNKNOWN_AUTHOR_NAME = "Unknown X user (author not sent by X)"
CLOSED = "closed"
# Free-text user search also matches names and emails: at most this many candidates' identities
# are read when looking for the owner of a handle.
MAX_HANDLE_CANDIDATES = 5
# The share of the account's requests per minute left to agents' apps and other integrations:
# deskbridge pauses when Zendesk says no more than this is left.
RESERVE_SHARE = 0.05


class Pacer:
    """Paces calls to the account's budget; defers (raises) instead of waiting.

    Two limits, both per Zendesk account:
    - a token bucket at the configured `requests_per_minute`, which spreads this process's
      calls over the minute;
    - what Zendesk itself says is left (`observe`, fed from every answer's
      `X-Rate-Limit-Remaining`): the budget is the account's, shared with every deskbridge
      process and every other app on it, so when the remainder falls to a reserve kept for
      the others, calls wait for the minute's reset (`ratelimit-reset`) instead of spending it.
    https://developer.zendesk.com/documentation/api-basics/best-practices/best-practices-for-avoiding-rate-limiting
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self.paused_until = -math.inf
        self._lock = threading.Lock()

    def take(self) -> None:
        """Spend one request; raises RateLimited with the wait when the budget is spent."""
        with self._lock:
            now = self.clock()
            if now < self.paused_until:
                raise RateLimited(PROVIDER, retry_after=self.paused_until - now,
                                  message="the account's requests for this minute are "
                                          "nearly spent (Zendesk's count, all clients)")
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens < 1:
                raise RateLimited(PROVIDER, retry_after=(1 - self.tokens) / self.rate,
                                  message="the plan's requests-per-minute budget is spent")
            self.tokens -= 1

    def observe(self, limit: int, remaining: int, reset_seconds: float | None) -> None:
        """Zendesk's own count for the account: pause when only the reserve is left."""
        reserve = max(1, int(limit * RESERVE_SHARE))
        if remaining > reserve:
            return
        # Without a reset time, wait as long as the reserve takes to come back at the limit's
        # pace (the window's reset is at most a minute away).
        wait = reset_seconds if reset_seconds is not None else \
            min(60.0, 60.0 / max(limit, 1) * (reserve + 1 - remaining))
        with self._lock:
            self.paused_until = max(self.paused_until, self.clock() + max(wait, 1.0))

    def observe_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """A requests response hook: read the account's rate-limit headers, if any."""
        headers = response.headers
        limit = _int_header(headers.get("X-Rate-Limit") or headers.get("ratelimit-limit"))
        remaining = _int_header(headers.get("X-Rate-Limit-Remaining")
                                or headers.get("ratelimit-remaining"))
        if limit is None or remaining is None:
            return
        reset = _int_header(headers.get("ratelimit-reset"))
        self.observe(limit, remaining, float(reset) if reset is not None else None)


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _raise_on_429(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if response.status_code == 429:
        retry_after = float(response.headers.get("Retry-After") or 60)
        raise RateLimited(PROVIDER, retry_after=retry_after)


class ZendeskHelpdesk:
    """One Zendesk account (subdomain), as deskbridge's helpdesk interface."""

    def __init__(self, name: str, settings: ZendeskSettings, *,
                 session: requests.Session | None = None, timeout: float = 15.0) -> None:
        self.name = name
        self.settings = settings
        self.base = f"https://{settings.subdomain}.zendesk.com"
        self.session = session or requests.Session()
        if settings.base_url:  # an emulator on loopback, in tests and the demo
            rebase_session(self.session, settings.base_url, prefix=self.base)
        self.pacer = Pacer(settings.requests_per_minute)
        self.session.hooks["response"].append(self.pacer.observe_response)
        self.session.hooks["response"].append(_raise_on_429)
        self.timeout = timeout
        # zenpy puts the credentials on our session (the plain requests below use them too).
        # Always pass them: zenpy's error for missing credentials prints its locals.
        self.client = Zenpy(
            subdomain=settings.subdomain, email=settings.email, session=self.session,
            token=settings.token.get_secret_value() if settings.token else None,
            oauth_token=settings.oauth_token.get_secret_value() if settings.oauth_token
            else None, timeout=timeout)

    # ------------------------------------------------------------ reads

    def get_ticket(self, ticket_id: str) -> Ticket | None:
        """The ticket read fresh, or None when there is no such ticket."""
        if not is_id(ticket_id):
            return None
        try:  # with its requester sideloaded: their external_id tells who they are on X
            body = self._get(f"/api/v2/tickets/{ticket_id}.json?include=users")
        except ProviderError as err:
            if err.status == 404:
                return None
            raise
        ticket = body["ticket"]
        requester: dict[str, Any] = next((u for u in body.get("users") or []
                          if u.get("id") == ticket.get("requester_id")), {})
        social = _social_id(requester.get("external_id"))
        return _ticket_from(ticket, (social,) if social else ())

    def get_comment(self, ticket_id: str, comment_id: str) -> HelpdeskComment | None:
        """Return the comment as Zendesk has it, or None when that ticket has no such comment
        (or there is no such ticket). Raises ProviderError, RateLimited.

        Zendesk has no endpoint for one comment by id: the ticket's comments are read newest
        first, so the answer a trigger just reported is on the first page (one call), with
        their authors sideloaded for their roles.
        https://developer.zendesk.com/api-reference/ticketing/tickets/ticket_comments/#list-comments
        """
        if not (is_id(ticket_id) and is_id(comment_id)):
            return None
        path: str | None = f"/api/v2/tickets/{ticket_id}/comments.json?" + urlencode(
            {"sort_order": "desc", "include": "users"})
        while path:
            try:
                page = self._get(path)
            except ProviderError as err:
                if err.status == 404:
                    return None
                raise
            found = _comment_on_page(page, ticket_id, comment_id)
            if found is not None:
                return found
            path = _next_page(page)
        return None

    def find_user(self, author: SocialUser) -> HelpdeskUser | None:
        """The sender as a Zendesk user, or None.

        First by the external_id deskbridge gives X users (`x:<X user id>`: it never changes).
        Else by a `twitter` identity whose value is the sender's handle, as Zendesk's own X
        channel leaves them: search finds the candidates, and each candidate's identities are
        read fresh, because search lags and a handle can change hands. A candidate deskbridge
        knows as another X account (its external_id) is not the sender, whatever its handle.
        """
        users = self._call(lambda: list(self.client.users(external_id=_external_id(author))))
        if users:
            return HelpdeskUser(str(users[0].id), users[0].name or "")
        return self._find_by_twitter_identity(author) if author.handle else None

    def _find_by_twitter_identity(self, author: SocialUser) -> HelpdeskUser | None:
        handle = author.handle.lstrip("@").lower()
        found = self._get("/api/v2/users/search.json?" + urlencode({"query": handle}))
        candidates = [u for u in found.get("users") or []
                      if _social_id(u.get("external_id")) in (None, author.user_id)]
        owners = []
        for user in candidates[:MAX_HANDLE_CANDIDATES]:
            identities = self._get(f"/api/v2/users/{user['id']}/identities.json")
            if any(i.get("type") == "twitter"
                   and str(i.get("value") or "").lstrip("@").lower() == handle
                   for i in identities.get("identities") or []):
                owners.append(user)
        if len(owners) != 1:  # none, or (Zendesk allows no such thing) several: do not guess
            return None
        return HelpdeskUser(str(owners[0]["id"]), owners[0].get("name") or "")

    def open_tickets(self, user_id: str) -> list[Ticket]:
        """The user's requested tickets that are not closed."""
        found = self._call(lambda: list(self.client.users.requested(int(user_id))))
        return [t for t in (_ticket(z) for z in found) if not t.is_closed]

    # ------------------------------------------------------------ writes

    def create_ticket(self, request: NewTicket, idempotency_key: str) -> WriteResult:
        """Open a ticket (or a follow-up of a closed one) with the message as first comment."""
        requester = request.requester_id or self._ensure_requester(request.message.author)
        comment = render_comment(request.message, request.reason, request.verified,
                                 write_marker(idempotency_key))
        ticket: dict[str, Any] = {
            "subject": request.subject, "requester_id": int(requester),
            "tags": ["deskbridge", request.message.channel, *request.tags],
            "comment": {"html_body": comment, "public": request.verified and request.public,
                        "author_id": int(requester) if request.verified else None},
        }
        if request.follow_up_of:
            ticket["via_followup_source_id"] = int(request.follow_up_of)
        for field in ("group_id", "brand_id", "priority"):
            if getattr(request, field) is not None:
                ticket[field] = getattr(request, field)
        body = self._post("/api/v2/tickets.json", {"ticket": ticket},
                          headers={"Idempotency-Key": idempotency_key})
        created = body["ticket"]
        audit = (body.get("audit") or {}).get("id")
        return WriteResult(str(created["id"]), str(audit or created["id"]), requester)

    def add_comment(self, request: NewComment, idempotency_key: str) -> WriteResult:
        """Add the message to a ticket: public as the customer when verified, else a note."""
        html = render_comment(request.message, request.reason, request.verified,
                              write_marker(idempotency_key))
        public = request.public and request.verified
        comment = Comment(html_body=html, public=public,
                          author_id=int(request.author_id) if public and request.author_id
                          else None)
        update = ZenpyTicket(id=int(request.ticket_id), comment=comment)
        try:
            audit = self._call(lambda: self.client.tickets.update(update))
        except ProviderError as err:
            if err.status == 422 and CLOSED in str(err).lower():  # Zendesk refuses closed ones
                return self._follow_up(request, idempotency_key)
            raise
        return WriteResult(request.ticket_id, str(getattr(audit.audit, "id", "") or ""))

    def _follow_up(self, request: NewComment, idempotency_key: str) -> WriteResult:
        follow_up = NewTicket(request.message, subject=f"Follow-up of #{request.ticket_id}",
                              follow_up_of=request.ticket_id, verified=request.verified,
                              reason=request.reason + f"; ticket {request.ticket_id} is closed",
                              requester_id=request.author_id, public=request.public)
        return self.create_ticket(follow_up, idempotency_key + ":follow-up")

    def record_deletion(self, request: DeletionNotice, idempotency_key: str) -> WriteResult:
        """An internal note that the customer deleted the post; with `redact`, its copied
        text is also removed from the comment that holds it (Zendesk's comment redaction)."""
        if request.redact and request.original_key:
            self._redact(request.ticket_id, write_marker(request.original_key))
        note = Comment(html_body=render_deletion(request.deletion, write_marker(idempotency_key)),
                       public=False)
        audit = self._call(lambda: self.client.tickets.update(
            ZenpyTicket(id=int(request.ticket_id), comment=note)))
        return WriteResult(request.ticket_id, str(getattr(audit.audit, "id", "") or ""))

    def _redact(self, ticket_id: str, marker: str) -> None:
        # https://developer.zendesk.com/api-reference/ticketing/tickets/ticket_comments/#redact-ticket-comment-in-agent-workspace
        comment = self._comment_with(ticket_id, marker)
        quoted = re.search(r"<blockquote>(.*?)</blockquote>", (comment or {}).get("html_body")
                           or "", re.DOTALL) if comment else None
        if comment is None or quoted is None or not quoted.group(1).strip():
            return  # nothing of ours left to redact
        html = comment["html_body"].replace(quoted.group(0),
                                            f"<blockquote><redact>{quoted.group(1)}</redact>"
                                            "</blockquote>", 1)
        self.request("PUT", f"/api/v2/comment_redactions/{comment['id']}",
                      {"ticket_id": int(ticket_id), "html_body": html})

    def _comment_with(self, ticket_id: str, marker: str) -> dict[str, Any] | None:
        comments = self.get_all(f"/api/v2/tickets/{ticket_id}/comments.json", "comments")
        return next((c for c in comments
                     if marker in (c.get("html_body") or c.get("body") or "")), None)

    def find_write(self, idempotency_key: str, ticket_id: str | None = None) -> WriteResult | None:
        """The comment written with this key on `ticket_id`, if it is there.

        A create needs no search: retried with the same Idempotency-Key, Zendesk answers with
        the ticket it made the first time.
        """
        if ticket_id is None or not is_id(ticket_id):
            return None
        comment = self._comment_with(ticket_id, write_marker(idempotency_key))
        return WriteResult(ticket_id, str(comment["id"])) if comment else None

    # ------------------------------------------------------------ helpers

    def _ensure_requester(self, author: SocialUser) -> str:
        if not author.is_known:  # one placeholder, never a user named after nobody
            user: dict[str, Any] = {"name": UNKNOWN_AUTHOR_NAME, "role": "end-user",
                                    "external_id": f"{author.channel}:{UNKNOWN_AUTHOR_ID}"}
            return str(self._post("/api/v2/users/create_or_update.json", {"user": user})
                       ["user"]["id"])
        user = {
            "name": author.display_name or f"@{author.handle}",
            "external_id": _external_id(author), "role": "end-user",
            "identities": [{"type": "twitter", "value": author.handle}] if author.handle
            else []}
        try:
            body = self._post("/api/v2/users/create_or_update.json", {"user": user})
        except ProviderError as err:
            if err.status != 422 or not user["identities"]:
                raise
            # The handle is another user's `twitter` identity (one `find_user` did not find:
            # search had not indexed it, or deskbridge knows its owner as another X account).
            # The ticket matters more than the identity: the requester is made without it.
            user["identities"] = []
            body = self._post("/api/v2/users/create_or_update.json", {"user": user})
        return str(body["user"]["id"])

    def _get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path, None)

    def _post(self, path: str, payload: dict[str, Any],
              headers: dict[str, str] | None = None) -> dict[str, Any]:
        return self.request("POST", path, payload, headers)

    def request(self, method: str, path: str, payload: dict[str, Any] | None,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
        """One paced API call with plain requests (`path` from `/api/v2/...`); its JSON body,
        `{}` when there is none. Raises ProviderError, RateLimited."""
        self.pacer.take()
        try:
            response = self.session.request(method, self.base + path, json=payload,
                                            headers=headers, timeout=self.timeout)
        except requests.RequestException as err:
            raise ProviderError(PROVIDER, f"no answer: {type(err).__name__}") from err
        if response.status_code >= 400:
            raise ProviderError(PROVIDER, _describe(response), status=response.status_code)
        if not response.content:
            return {}
        body: dict[str, Any] = response.json()
        return body

    def get_all(self, path: str, key: str) -> list[dict[str, Any]]:
        """Every item under `key` of a list endpoint, page after page: offset pagination's
        `next_page`, or cursor pagination's `links.next` while `meta.has_more`.
        https://developer.zendesk.com/api-reference/introduction/pagination/"""
        items: list[dict[str, Any]] = []
        url: str | None = path
        while url:
            body = self._get(url)
            items += body.get(key) or []
            url = _next_page(body)
        return items

    def _call(self, call: Callable[[], T]) -> T:
        self.pacer.take()
        try:
            return call()
        except RecordNotFoundException as err:
            raise ProviderError(PROVIDER, "not found", status=404) from err
        except APIException as err:
            response = getattr(err, "response", None)
            status = response.status_code if response is not None else None
            raise ProviderError(PROVIDER, _describe(response) if response is not None
                                else str(err), status=status) from err
        except (ZenpyException, requests.RequestException) as err:
            raise ProviderError(PROVIDER, f"no answer: {type(err).__name__}",
                                permanent=False) from err


def _ticket(z: Any) -> Ticket:
    return _ticket_from({"id": z.id, "status": z.status, "requester_id": z.requester_id,
                         "updated_at": z.updated_at})


def _ticket_from(ticket: dict[str, Any], social_ids: tuple[str, ...] = ()) -> Ticket:
    status = (ticket.get("status") or "").lower()
    updated = ticket.get("updated_at")
    requester = ticket.get("requester_id")
    return Ticket(
        id=str(ticket["id"]), status=status, requester_id=str(requester) if requester else None,
        updated_at=datetime.fromisoformat(updated) if isinstance(updated, str) else None,
        is_closed=status == CLOSED, requester_social_ids=social_ids,
    )


def _comment_on_page(page: dict[str, Any], ticket_id: str,
                     comment_id: str) -> HelpdeskComment | None:
    """Return the comment `comment_id` among one page of List Comments, with its author's role
    from the sideloaded users; None when it is not on this page."""
    comments = _listed(page, "comments")
    found = next((c for c in comments
                  if isinstance(c, dict) and str(c.get("id")) == comment_id), None)
    if found is None:
        return None
    author = found.get("author_id")
    user = next((u for u in _listed(page, "users")
                 if isinstance(u, dict) and u.get("id") == author), {})
    body = found.get("plain_body") if isinstance(found.get("plain_body"), str) \
        else found.get("body")
    role = user.get("role")
    return HelpdeskComment(
        id=comment_id, ticket_id=ticket_id, body=body if isinstance(body, str) else "",
        public=found.get("public") is True,
        author_id=str(author) if author is not None else None,
        author_role=role if isinstance(role, str) else "")


def _listed(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    return value if isinstance(value, list) else []


def _next_page(body: dict[str, Any]) -> str | None:
    """The path of the page after this one: offset pagination's `next_page`, or cursor
    pagination's `links.next` while `meta.has_more`."""
    more = (body.get("meta") or {}).get("has_more")
    return _api_path(body.get("next_page") or
                     ((body.get("links") or {}).get("next") if more else None))


def _api_path(url: str | None) -> str | None:
    """`/api/v2/...?...` of a full link Zendesk gives for the next page."""
    if not url:
        return None
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _social_id(external_id: Any) -> str | None:
    """The X user id in an external_id deskbridge gave a requester ("x:<id>")."""
    if isinstance(external_id, str) and external_id.startswith("x:"):
        return external_id[2:] or None
    return None


def _external_id(author: SocialUser) -> str:
    return f"{author.channel}:{author.user_id}"


def _describe(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason or f"HTTP {response.status_code}"
    details = body.get("details") or {}
    parts = [d.get("description", "") for items in details.values() if isinstance(items, list)
             for d in items if isinstance(d, dict)]
    return "; ".join(p for p in [body.get("error"), body.get("description"), *parts] if p)
