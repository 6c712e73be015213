"""Registering deskbridge's webhook with X (v2 webhooks + Account Activity subscriptions).

Plain requests: tweepy has no webhook helpers. Managing webhooks is app-only (the app's
bearer token); subscribing an account to a webhook acts as that account (OAuth 1.0a).
https://docs.x.com/x-api/webhooks/introduction
https://docs.x.com/x-api/account-activity/quickstart
"""

from __future__ import annotations

from typing import Any

import requests
from requests_oauthlib import OAuth1

from integrations.errors import ConfigurationError, ProviderError
from integrations.rebasing import rebase_session
from integrations.twitter.client import TWEEPY_HOST
from integrations.twitter.settings import XChannelSettings

# X's reasons (the part of errors[].message before the colon) → what the admin should do.
ADVICE = {
    "CrcValidationFailed": "X could not validate the URL: it must answer GET ?crc_token=… with "
                           "this app's consumer secret (is deskbridge reachable there over "
                           "HTTPS, and is this channel's consumer_secret right?)",
    "UrlValidationFailed": "X refused the URL: it must be https, public, without a port",
    "DuplicateUrlFailed": "this URL is already registered for the app (deskbridge x webhook list)",
    "WebhookLimitExceeded": "the app has as many webhooks as its X plan allows: delete one first "
                            "(deskbridge x webhook list, then delete ID)",
    "WebhookIdInvalid": "no webhook of this app has that id (deskbridge x webhook list)",
    "DuplicateSubscriptionFailed": "the account is already subscribed to this webhook",
}


class XWebhooks:
    """The webhook endpoints of X's API for one app, and subscription for one account."""

    def __init__(self, settings: XChannelSettings, session: requests.Session | None = None,
                 timeout: float = 15.0) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        self.timeout = timeout
        rebase_session(self.session, settings.api_base_url, TWEEPY_HOST)

    def list(self) -> list[dict[str, Any]]:
        data = self._request("GET", "/2/webhooks", app=True).get("data")
        return list(data or [])

    def register(self, url: str) -> dict[str, Any]:
        """Register `url`; X checks it with a CRC request before it answers."""
        return dict(self._request("POST", "/2/webhooks", app=True, json={"url": url})["data"])

    def validate(self, webhook_id: str) -> bool:
        """Ask X to run the CRC check again (and re-enable a webhook that failed it)."""
        data = self._request("PUT", f"/2/webhooks/{webhook_id}", app=True).get("data") or {}
        return bool(data.get("valid"))

    def delete(self, webhook_id: str) -> bool:
        data = self._request("DELETE", f"/2/webhooks/{webhook_id}", app=True).get("data") or {}
        return bool(data.get("deleted"))

    def subscribe(self, webhook_id: str) -> bool:
        """Send this channel's account activity to the webhook."""
        path = f"/2/account_activity/webhooks/{webhook_id}/subscriptions/all"
        data = self._request("POST", path, app=False).get("data") or {}
        return bool(data.get("subscribed"))

    def _request(self, method: str, path: str, *, app: bool,
                 json: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.session.request(method, TWEEPY_HOST + path, json=json,
                                            timeout=self.timeout, **self._auth(app))
        except requests.RequestException as err:
            raise ProviderError("x", f"no answer from X: {type(err).__name__}") from err
        body = _json(response)
        if response.status_code >= 400:
            raise ProviderError("x", explain(body, response.reason), status=response.status_code)
        return body

    def _auth(self, app: bool) -> dict[str, Any]:
        s = self.settings
        if app:
            if s.bearer_token is None:
                raise ConfigurationError("this channel needs bearer_token (the app's bearer "
                                         "token) to manage webhooks")
            return {"headers": {"Authorization": f"Bearer {s.bearer_token.get_secret_value()}"}}
        if s.access_token is None or s.access_token_secret is None:
            raise ConfigurationError("this channel needs access_token and access_token_secret "
                                     "(the account's) to subscribe it")
        return {"auth": OAuth1(s.consumer_key.get_secret_value(),
                               s.consumer_secret.get_secret_value(),
                               s.access_token.get_secret_value(),
                               s.access_token_secret.get_secret_value())}


def explain(body: dict[str, Any], fallback: str) -> str:
    """X's error answer in words an admin can act on."""
    messages = [str(e.get("message", "")) for e in body.get("errors") or [] if isinstance(e, dict)]
    messages = messages or [str(body.get("detail") or fallback)]
    explained = []
    for message in messages:
        reason = message.split(":", 1)[0].strip()
        explained.append(f"{message} — {ADVICE[reason]}" if reason in ADVICE else message)
    return "; ".join(explained)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
