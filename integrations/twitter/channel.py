"""The X channel adapter: an agent's answer out as a reply or a DM, through tweepy.

It turns the pipeline's intents into tweepy calls and tweepy's errors into deskbridge's:
a 429 becomes `RateLimited` with X's reset time, 5xx and network failures are transient,
other refusals permanent. `find_reply` / `find_dm` look through the account's recent posts
and DMs, so a retry after an unknown outcome never posts twice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import tweepy

from integrations.errors import ProviderError, RateLimited
from integrations.twitter.client import make_client
from integrations.twitter.settings import XChannelSettings
from integrations.twitter.text import plain, split_thread, truncate_with_link

T = TypeVar("T")
_URL = re.compile(r"https?://\S+")


def same_text(a: str, b: str) -> bool:
    """Whether two texts are the same post; X rewrites every URL to a t.co link."""
    def norm(text: str) -> str:
        return " ".join(_URL.sub("<url>", text).split())
    return norm(a) == norm(b)


class XChannel:
    """One X account deskbridge answers as."""

    kind = "x"

    def __init__(self, name: str, settings: XChannelSettings,
                 client: tweepy.Client | None = None) -> None:
        self.name = name
        self.account = settings.account_id
        self.client = client or make_client(settings)

    def fit_reply(self, text: str, mode: str, link: str | None) -> list[str]:
        """The posts of a reply: one, a numbered thread, or one truncated with a link."""
        text = plain(text)
        if mode == "truncate" and link:
            return [truncate_with_link(text, link)]
        return split_thread(text)

    def send_reply(self, in_reply_to_id: str, text: str) -> str:
        response = call_x(lambda: self.client.create_tweet(
            text=text, in_reply_to_tweet_id=in_reply_to_id, user_auth=True))
        return str(response.data["id"])

    def send_dm(self, recipient_id: str, text: str) -> str:
        response = call_x(lambda: self.client.create_direct_message(
            participant_id=recipient_id, text=text, user_auth=True))
        return str(response.data["dm_event_id"])

    def find_reply(self, in_reply_to_id: str, text: str) -> str | None:
        response = call_x(lambda: self.client.get_users_tweets(
            self.account, since_id=in_reply_to_id, max_results=100,
            tweet_fields=["referenced_tweets"], user_auth=True))
        for post in response.data or []:
            parents = {str(r.id) for r in post.referenced_tweets or [] if r.type == "replied_to"}
            if in_reply_to_id in parents and same_text(post.text, text):
                return str(post.id)
        return None

    def find_dm(self, recipient_id: str, text: str) -> str | None:
        response = call_x(lambda: self.client.get_direct_message_events(
            participant_id=recipient_id, event_types="MessageCreate", max_results=50,
            dm_event_fields=["id", "text", "sender_id", "created_at"], user_auth=True))
        for event in response.data or []:
            if str(event.sender_id) == self.account and same_text(event.text, text):
                return str(event.id)
        return None


def call_x(request: Callable[[], T]) -> T:
    """Run a tweepy call, raising deskbridge's provider errors for X's."""
    try:
        return request()
    except tweepy.TooManyRequests as err:
        reset = err.reset_time or int(time.time()) + 60
        raise RateLimited("x", retry_after=max(1.0, reset - time.time())) from err
    except tweepy.HTTPException as err:  # incl. TwitterServerError (5xx: not permanent)
        raise ProviderError("x", _describe(err), status=err.response.status_code) from err
    except requests.RequestException as err:
        raise ProviderError("x", f"no answer: {type(err).__name__}", permanent=False) from err


def _describe(err: tweepy.HTTPException) -> str:
    messages: list[Any] = err.api_messages or [err.response.reason]
    return "; ".join(str(m) for m in messages)
