"""The X API client: tweepy's Client, pointed at the configured API host.

tweepy builds every URL on `https://api.twitter.com`; a `RebasingAdapter`
(`integrations/rebasing.py`), mounted on the client's requests session, sends them to
`api_base_url` instead (X's own `https://api.x.com` in production, an emulator on loopback
in tests). OAuth 1.0a signing happens before the
adapter, on the original URL, exactly as tweepy does it.
"""

from __future__ import annotations

from typing import Any

import tweepy

from integrations.rebasing import rebase_session
from integrations.twitter.settings import XChannelSettings

TWEEPY_HOST = "https://api.twitter.com"


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
    rebase_session(client.session, settings.api_base_url, TWEEPY_HOST)
    client.session.request = _with_timeout(client.session.request, timeout)
    return client


def _with_timeout(request: Any, timeout: float) -> Any:
    # tweepy passes no timeout; without one a hung connection would hold a worker forever.
    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)
    return call
