"""`/webhooks/zendesk`: agent answers and identity confirmations from Zendesk triggers.

Each Zendesk account's webhook posts to `/webhooks/zendesk/<helpdesk>` (the helpdesk's name in
the config), so the request is verified with that account's signing secret; with one Zendesk
helpdesk, `/webhooks/zendesk` also works. A POST is verified on the raw body before anything
is parsed. Agent replies go to the inbox (deduplicated by comment id); a confirmation
verifies the ticket's pending identity claims at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from flask import Blueprint, Response, jsonify, request

from integrations.events import AgentReply
from integrations.zendesk.settings import ZendeskSettings
from integrations.zendesk.webhooks import (
    INVOCATION_HEADER,
    ConfirmClaim,
    ZendeskEvent,
    confirmation,
    parse_webhook,
    verify_signature,
)

if TYPE_CHECKING:
    from integrations.runtime import Runtime

log = logging.getLogger("deskbridge.zendesk")


def zendesk_helpdesks(helpdesks: Mapping[str, object]) -> dict[str, ZendeskSettings]:
    """The configured Zendesk helpdesks, by name."""
    return {name: hd for name, hd in helpdesks.items() if isinstance(hd, ZendeskSettings)}


def create_blueprint(runtime: Runtime) -> Blueprint:
    """The Zendesk webhook endpoints for one deskbridge process."""
    helpdesks = zendesk_helpdesks(runtime.settings.helpdesks)
    bp = Blueprint("zendesk", __name__)

    def webhook(helpdesk: str | None = None) -> tuple[Response, int]:
        if helpdesk is None and len(helpdesks) != 1:
            return _no_single_helpdesk(helpdesks)
        name = helpdesk if helpdesk is not None else next(iter(helpdesks))
        settings = helpdesks.get(name)
        if settings is None:
            return jsonify(error="unknown_helpdesk",
                           reason=f"no Zendesk helpdesk named {name!r} is configured"), 404
        return _deliver(runtime, name, settings)

    bp.add_url_rule("", "webhook", webhook, methods=["POST"])
    bp.add_url_rule("/<helpdesk>", "webhook_for_helpdesk", webhook, methods=["POST"])
    return bp


def _no_single_helpdesk(helpdesks: Mapping[str, ZendeskSettings]) -> tuple[Response, int]:
    if not helpdesks:
        return jsonify(error="unknown_helpdesk", reason="no Zendesk helpdesk is configured"), 404
    return jsonify(error="no_single_helpdesk",
                   reason="several Zendesk helpdesks are configured: "
                          "point each one's webhook at /webhooks/zendesk/<helpdesk>"), 400


def _deliver(runtime: Runtime, name: str, settings: ZendeskSettings) -> tuple[Response, int]:
    body = request.get_data(cache=False)
    now = runtime.pipeline.clock()
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    verify_signature(dict(request.headers), body, secret, now)
    event = parse_webhook(body, name, request.headers.get(INVOCATION_HEADER), received_at=now)
    return _act(runtime, event, now)


def _confirm(runtime: Runtime, event: ConfirmClaim, now: datetime) -> int:
    confirmed = runtime.store.confirm_identity(event.helpdesk, event.ticket_id, now)
    if confirmed:
        log.info("identity claims confirmed", extra={
            "helpdesk": event.helpdesk, "ticket_id": event.ticket_id, "count": len(confirmed)})
    return len(confirmed)


def _act(runtime: Runtime, event: ZendeskEvent, now: datetime) -> tuple[Response, int]:
    if isinstance(event, AgentReply):
        claim = confirmation(event.helpdesk, event.ticket_id, event.raw.get("tags"))
        if claim is not None:  # confirmed before the answer is stored, so it can go out
            _confirm(runtime, claim, now)
        # Internal notes are stored too: the worker's handler is the one place that decides
        # what is sent to a customer, and its outcome shows on the dashboard.
        result = runtime.pipeline.accept([event])
        return jsonify(accepted=len(result.new_ids), duplicates=result.is_new.count(False)), 200
    if isinstance(event, ConfirmClaim):
        return jsonify(confirmed=_confirm(runtime, event, now)), 200
    log.info("Zendesk delivery ignored", extra={"reason": event.reason})
    return jsonify(accepted=0, duplicates=0, ignored=event.reason), 200
