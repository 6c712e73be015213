"""The X API client: tweepy's Client, pointed at the configured API host.

tweepy builds every URL on `https://api.twitter.com`; `RebasingAdapter`, mounted on the
client's requests session, sends them to `api_base_url` instead (X's own `https://api.x.com`
in production, an emulator on loopback in tests). OAuth 1.0a signing happens before the
adapter, on the original URL, exactly as tweepy does it.
"""

from __future__ import annotations

from typing import Any

import requests
import tweepy
from requests.adapters import HTTPAdapter

from integrations.twitter.settings import XChannelSettings

TWEEPY_HOST = "https://api.twitter.com"


class RebasingAdapter(HTTPAdapter):
    """Sends requests for one URL prefix to another base URL."""

    def __init__(self, prefix: str, base_url: str, **kwargs: Any) -> None:
        self.prefix = prefix.rstrip("/")
        self.base_url = base_url.rstrip("/")
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        asked = request.url or ""
        if not asked.startswith(self.prefix):
            return super().send(request, **kwargs)
        request.url = self.base_url + asked[len(self.prefix):]
        response = super().send(request, **kwargs)
        # Hand the answer back under the URL that was asked for: SDKs read it (zenpy picks
        # its response handler by the host in `response.request.url`).
        request.url = response.url = asked
        return response


def rebase_session(session: requests.Session, base_url: str, prefix: str = TWEEPY_HOST) -> None:
    """Make `session` send what it is asked to send to `prefix` to `base_url` instead."""
    if base_url.rstrip("/") != prefix:
        session.mount(prefix + "/", RebasingAdapter(prefix, base_url))


def make_client(settings: XChannelSettings, *, timeout: float = 10.0) -> tweepy.Client:
    """A tweepy Client acting as the channel's account, on the configured API host.

    It never sleeps on a rate limit (`wait_on_rate_limit=False`): a 429 raises
    `tweepy.TooManyRequests`, and the caller schedules the retry.
    """
    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    client = tweepy.Client(
        bearer_token=secret(settings.bearer_token),
        consumer_key=secret(settings.consumer_key),
        consumer_secret=secret(settings.consumer_secret),
        access_token=secret(settings.access_token),
        access_token_secret=secret(settings.access_token_secret),
        wait_on_rate_limit=False,
    )
    rebase_session(client.session, settings.api_base_url)
    client.session.request = _with_timeout(client.session.request, timeout)
    return client


def _with_timeout(request: Any, timeout: float) -> Any:
    # tweepy passes no timeout; without one a hung connection would hold a worker forever.
    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)
    return call
