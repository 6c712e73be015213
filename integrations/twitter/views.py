"""`/webhooks/x`: X's CRC challenge (GET) and signed event deliveries (POST).

Several X apps may share one deskbridge. With one app, register `/webhooks/x`; with several,
register `/webhooks/x/<channel>` for each app, so the CRC knows which consumer secret to
answer with. A POST is verified against the consumer secrets it could be signed with, on the
raw body, before anything is parsed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from flask import Blueprint, Response, jsonify, request

from integrations.events import distinct_events
from integrations.twitter.settings import XChannelSettings
from integrations.twitter.webhooks import (
    check_crc_token,
    crc_response,
    parse_delivery,
    verify_signature,
)

if TYPE_CHECKING:
    from integrations.runtime import Runtime

log = logging.getLogger("deskbridge.x")


class XAccounts:
    """The configured X channels, by name and by account id, with their consumer secrets."""

    def __init__(self, channels: Mapping[str, object]) -> None:
        self.by_name = {n: c for n, c in channels.items() if isinstance(c, XChannelSettings)}
        # Settings are frozen: the secrets are looked up once, not on every delivery.
        self.secret_of = {n: c.consumer_secret.get_secret_value() for n, c in self.by_name.items()}
        self.secret_of_account = {c.account_id: self.secret_of[n] for n, c in self.by_name.items()}
        self._all_secrets = sorted(set(self.secret_of.values()))

    def secrets(self, channel_name: str | None) -> list[str]:
        """The consumer secrets a request to this URL may be signed with (distinct)."""
        if channel_name is not None:
            return [self.secret_of[channel_name]] if channel_name in self.secret_of else []
        return self._all_secrets


def create_blueprint(runtime: Runtime) -> Blueprint:
    """The X webhook endpoints for one deskbridge process."""
    accounts = XAccounts(runtime.settings.channels)
    bp = Blueprint("x", __name__)

    def webhook(channel: str | None = None) -> tuple[Response, int]:
        # Only a POST delivers. Flask routes HEAD to a GET view, and HTTP says HEAD is a GET
        # without the body (RFC 9110 §9.3.2), so HEAD is answered as a CRC whose body
        # werkzeug drops: it stores nothing and shows no response token.
        if request.method == "POST":
            return _deliver(runtime, accounts, channel)
        return _crc(accounts, channel)

    bp.add_url_rule("", "webhook", webhook, methods=["GET", "POST"])
    bp.add_url_rule("/<channel>", "webhook_for_channel", webhook, methods=["GET", "POST"])
    return bp


def _crc(accounts: XAccounts, channel: str | None) -> tuple[Response, int]:
    token = request.args.get("crc_token", "")
    check_crc_token(token)  # before anything else: the answer is a signature
    secrets = accounts.secrets(channel)
    if len(secrets) != 1:
        reason = ("no such X channel" if channel else
                  "no X channel is configured" if not secrets else
                  "several X apps are configured: register /webhooks/x/<channel> for each app")
        return jsonify(error="no_single_app", reason=reason), 404 if not secrets else 400
    return jsonify(crc_response(secrets[0], token)), 200


def _deliver(runtime: Runtime, accounts: XAccounts, channel: str | None) -> tuple[Response, int]:
    body = request.get_data(cache=False)
    secret = verify_signature(request.headers, body, accounts.secrets(channel))
    delivery = parse_delivery(body, runtime.pipeline.clock())
    if delivery.events and accounts.secret_of_account.get(delivery.account_id or "") != secret:
        # A retry cannot fix this, so X is told "fine" and the admin is told in the log.
        log.warning("X events for an account that is not configured here",
                    extra={"account": delivery.account_id, "events": len(delivery.events)})
        return jsonify(received=0, reason="account not configured"), 200
    # Durable on return; deduplicated and queued on the way into the store (intake.py). One
    # body listing a post twice received it once.
    received = runtime.intake.receive(distinct_events(delivery.events))
    if delivery.unknown:
        log.info("X events ignored", extra={"types": ",".join(delivery.unknown)})
    return jsonify(received=received, ignored=list(delivery.unknown)), 200
