"""Polling X for accounts without a webhook tier: mentions and DMs, behind durable cursors.

Each entry of a page is read on its own: one that does not fit is skipped with a log line
and the rest of the page is read (a page is not signed, and refusing it whole would stall the
stream behind one bad post for good). A post without its author (X sent default fields only)
is kept with the author unknown.

A cursor (the newest id seen) advances only after `accept()` has committed everything it
covers, so a crash between the two re-reads a page and the inbox's dedupe absorbs it. The
first poll of a stream only sets its starting point: installing deskbridge does not turn
an account's old mentions into tickets. A 429 schedules the next poll at X's reset time;
polls run in worker threads, never in a web process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tweepy

from integrations import payload
from integrations.errors import DeskbridgeError, PayloadError, RateLimited
from integrations.events import Event, SocialMessage
from integrations.pipeline import Pipeline
from integrations.twitter.channel import call_x
from integrations.twitter.settings import XChannelSettings
from integrations.twitter.webhooks import (
    CHANNEL,
    parse_v2_dm,
    parse_v2_post,
    snowflake_at,
    users_by_id,
)

log = logging.getLogger("deskbridge.x.poll")

# https://docs.x.com/x-api/users/get-mentions
TWEET_FIELDS = ["author_id", "conversation_id", "created_at", "entities", "in_reply_to_user_id",
                "lang", "note_tweet", "referenced_tweets"]
USER_FIELDS = ["name", "username", "public_metrics"]
MENTION_EXPANSIONS = ["author_id", "referenced_tweets.id", "referenced_tweets.id.author_id"]
# https://docs.x.com/x-api/direct-messages/get-dm-events
DM_FIELDS = ["id", "text", "event_type", "created_at", "sender_id", "dm_conversation_id",
             "participant_ids", "entities", "attachments", "referenced_tweets"]
MAX_PAGES = 50


@dataclass(frozen=True)
class PollResult:
    stream: str
    fetched: int
    accepted: int
    cursor: str | None
    started: bool = False  # the first poll only set the starting point


def poll_mentions(client: tweepy.Client, settings: XChannelSettings, pipeline: Pipeline) -> PollResult:
    """Fetch mentions newer than the cursor (every page), accept them, then move the cursor."""
    account, store = settings.account_id, pipeline.store
    since = store.get_cursor(CHANNEL, account, "mentions")
    events: list[Event] = []
    newest: str | None = None
    for page in _pages(lambda token: client.get_users_mentions(
            account, since_id=since, max_results=100 if since else 5, pagination_token=token,
            expansions=MENTION_EXPANSIONS, tweet_fields=TWEET_FIELDS, user_fields=USER_FIELDS,
            user_auth=True), first_only=since is None):
        newest = newest or _newest_id(page)
        events.extend(read_page(page, parse_v2_post, account, "mentions"))
    return _commit(pipeline, settings, "mentions", since, newest, events)


def poll_dms(client: tweepy.Client, settings: XChannelSettings, pipeline: Pipeline) -> PollResult:
    """Fetch DM events newer than the cursor (X lists newest first), accept, move the cursor."""
    account, store = settings.account_id, pipeline.store
    since = store.get_cursor(CHANNEL, account, "dms")
    events: list[SocialMessage] = []
    for page in _pages(lambda token: client.get_direct_message_events(
            event_types="MessageCreate", dm_event_fields=DM_FIELDS, expansions=["sender_id"],
            user_fields=USER_FIELDS, max_results=100, pagination_token=token, user_auth=True),
            first_only=since is None):
        read = read_page(page, parse_v2_dm, account, "dm_events")
        fresh = [e for e in read if since is None or int(e.message_id) > int(since)]
        events.extend(fresh)
        if len(fresh) < len(read):
            break  # reached what the cursor already covers
    newest = max((e.message_id for e in events), key=int, default=None)
    return _commit(pipeline, settings, "dms", since, newest, events)


PageParser = Callable[[Mapping[str, Any], Mapping[str, Mapping[str, Any]], str, str],
                      SocialMessage]


def read_page(page: Mapping[str, Any], parse: PageParser, account: str,
              stream: str) -> list[SocialMessage]:
    """Return the messages of one v2 API page, each entry read on its own.

    An entry that does not fit is skipped with a log line naming the field; `includes` of the
    wrong type only loses the authors' profiles. An empty page (`{"meta": {...}}`) is [].
    """
    users = _page_users(page, stream)
    messages: list[SocialMessage] = []
    for index, entry in enumerate(payload.sequence(page, "data", "data")):
        try:
            if not isinstance(entry, Mapping):
                raise PayloadError(f"data[{index}] is not an object")
            messages.append(parse(entry, users, account, f"data[{index}]"))
        except PayloadError as err:
            log.warning("X page entry skipped", extra={"stream": stream, "account": account,
                                                       "error": str(err)})
    return messages


def _page_users(page: Mapping[str, Any], stream: str) -> Mapping[str, Mapping[str, Any]]:
    try:
        return users_by_id(payload.mapping(page, "includes", "includes"))
    except PayloadError as err:
        log.warning("X page includes skipped", extra={"stream": stream, "error": str(err)})
        return {}


def _newest_id(page: Mapping[str, Any]) -> str | None:
    try:
        return payload.digits(payload.mapping(page, "meta", "meta").get("newest_id"),
                              "meta.newest_id")
    except PayloadError as err:
        log.warning("X page meta.newest_id skipped", extra={"error": str(err)})
        return None


def _pages(fetch: Callable[[str | None], Any], *, first_only: bool) -> Iterator[dict[str, Any]]:
    token: str | None = None
    for _ in range(MAX_PAGES):
        response = call_x(lambda t=token: fetch(t))  # type: ignore[misc]
        meta: dict[str, Any] = response.meta or {}
        yield {"data": _raw(response.data), "includes": _raw_includes(response.includes),
               "meta": meta}
        token = meta.get("next_token")
        if first_only or not token:
            return


def _raw(data: Any) -> list[dict[str, Any]]:
    return [item.data if hasattr(item, "data") else item for item in data or []]


def _raw_includes(includes: Any) -> dict[str, Any]:
    return {"users": _raw((includes or {}).get("users"))}


def _commit(pipeline: Pipeline, settings: XChannelSettings, stream: str, since: str | None,
            newest: str | None, events: Sequence[Event]) -> PollResult:
    if since is None:  # the first poll: remember where we start, import nothing old
        events = []
        newest = newest or snowflake_at(pipeline.clock())
    result = pipeline.accept(events) if events else None
    cursor = since
    if newest is not None and (since is None or int(newest) > int(since)):
        pipeline.store.set_cursor(CHANNEL, settings.account_id, stream, newest, pipeline.clock())
        cursor = newest
    accepted = len(result.new_ids) if result else 0
    log.info("polled", extra={"stream": stream, "account": settings.account_id,
                              "fetched": len(events), "accepted": accepted, "cursor": cursor})
    return PollResult(stream, len(events), accepted, cursor, started=since is None)


def poll_channel(client: tweepy.Client, settings: XChannelSettings,
                 pipeline: Pipeline) -> list[PollResult]:
    """One poll of both streams of one account."""
    return [poll_mentions(client, settings, pipeline), poll_dms(client, settings, pipeline)]


class Poller:
    """Polls one account on a thread until stopped; after a 429, waits for X's reset."""

    def __init__(self, client: tweepy.Client, settings: XChannelSettings, pipeline: Pipeline,
                 stop: threading.Event) -> None:
        self.client, self.settings, self.pipeline, self.stop = client, settings, pipeline, stop

    def run_once(self) -> float:
        """Poll now; returns how many seconds to wait before the next poll."""
        try:
            poll_channel(self.client, self.settings, self.pipeline)
        except RateLimited as err:
            log.warning("X rate limit: next poll at the reset", extra={
                "account": self.settings.account_id, "wait_s": round(err.retry_after or 0)})
            return max(float(err.retry_after or 0), 1.0)
        except DeskbridgeError as err:
            log.warning("poll failed", extra={"account": self.settings.account_id,
                                              "error": str(err)})
        return float(self.settings.poll_interval_seconds)

    def start(self) -> threading.Thread:
        def loop() -> None:
            while not self.stop.wait(self.run_once()):
                pass

        thread = threading.Thread(target=loop, name=f"x-poll-{self.settings.account_id}",
                                  daemon=True)
        thread.start()
        return thread
