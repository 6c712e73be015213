"""`deskbridge zendesk setup`: the Zendesk webhook and triggers deskbridge needs, kept in shape.

Creates, or updates to what they should be, by name (running it twice changes nothing):
- the webhook `deskbridge <helpdesk>` that POSTs JSON to `<public url>/webhooks/zendesk/<helpdesk>`;
- the trigger "deskbridge: agent answer": a public comment on a ticket tagged `deskbridge`,
  in an update made by an agent (that includes deskbridge's own API user writing a customer's
  post: the webhook view ignores those, see `webhooks.is_customer_comment`);
- the trigger "deskbridge: identity confirmed": the tag `deskbridge_verified` (set by an
  agent's macro) confirms the pending claim, and is removed again.
https://developer.zendesk.com/api-reference/webhooks/webhooks-api/webhooks/
https://developer.zendesk.com/api-reference/ticketing/business-rules/triggers/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from integrations.zendesk.adapter import ZendeskHelpdesk
from integrations.zendesk.webhooks import VERIFIED_TAG, trigger_body


@dataclass(frozen=True)
class Change:
    """One thing setup did (or would do, with --dry-run)."""

    kind: str  # "webhook" or "trigger"
    name: str
    action: str  # "create", "update" or "unchanged"

    def __str__(self) -> str:
        return f"{self.action:<9} {self.kind} {self.name!r}"


def webhook_spec(helpdesk: str, public_url: str) -> dict[str, Any]:
    return {
        "name": f"deskbridge {helpdesk}",
        "endpoint": f"{public_url.rstrip('/')}/webhooks/zendesk/{helpdesk}",
        "http_method": "POST", "request_format": "json", "status": "active",
        "subscriptions": ["conditional_ticket_events"],
    }


def trigger_specs(webhook_id: str) -> list[dict[str, Any]]:
    """The two triggers, pointing at the webhook."""
    answer = {
        "title": "deskbridge: agent answer", "active": True,
        "conditions": {"all": [
            {"field": "update_type", "operator": "is", "value": "Change"},
            {"field": "comment_is_public", "operator": "is", "value": "true"},
            {"field": "current_tags", "operator": "includes", "value": "deskbridge"},
            {"field": "role", "operator": "is", "value": "agent"},
        ], "any": []},
        "actions": [{"field": "notification_webhook",
                     "value": [webhook_id, trigger_body("comment")]}],
    }
    confirmed = {
        "title": "deskbridge: identity confirmed", "active": True,
        "conditions": {"all": [
            {"field": "update_type", "operator": "is", "value": "Change"},
            {"field": "current_tags", "operator": "includes", "value": VERIFIED_TAG},
        ], "any": []},
        "actions": [{"field": "notification_webhook",
                     "value": [webhook_id, trigger_body("tagged")]},
                    {"field": "remove_tags", "value": VERIFIED_TAG}],
    }
    return [answer, confirmed]


class ZendeskSetup:
    """Brings one Zendesk account's webhook and triggers to what deskbridge needs."""

    def __init__(self, zendesk: ZendeskHelpdesk, public_url: str, *, dry_run: bool) -> None:
        self.zendesk, self.public_url, self.dry_run = zendesk, public_url, dry_run

    def run(self) -> list[Change]:
        """Apply (or with dry_run, only plan) every change; raises ProviderError on refusal."""
        spec = webhook_spec(self.zendesk.name, self.public_url)
        webhook_id, change = self._webhook(spec)
        changes = [change]
        existing = {t["title"]: t for t in self.zendesk.get_all("/api/v2/triggers.json",
                                                                 "triggers")}
        for trigger in trigger_specs(webhook_id):
            changes.append(self._trigger(trigger, existing.get(trigger["title"])))
        return changes

    def _webhook(self, spec: dict[str, Any]) -> tuple[str, Change]:
        found = [w for w in self.zendesk.get_all("/api/v2/webhooks", "webhooks")
                 if w.get("name") == spec["name"]]
        if not found:
            if self.dry_run:
                return "<new webhook>", Change("webhook", spec["name"], "create")
            created = self._send("POST", "/api/v2/webhooks", {"webhook": spec})
            return str(created["webhook"]["id"]), Change("webhook", spec["name"], "create")
        current = found[0]
        if all(current.get(k) == v for k, v in spec.items()):
            return str(current["id"]), Change("webhook", spec["name"], "unchanged")
        if not self.dry_run:
            self._send("PATCH", f"/api/v2/webhooks/{current['id']}", {"webhook": spec})
        return str(current["id"]), Change("webhook", spec["name"], "update")

    def _trigger(self, spec: dict[str, Any], current: dict[str, Any] | None) -> Change:
        if current is None:
            if not self.dry_run:
                self._send("POST", "/api/v2/triggers.json", {"trigger": spec})
            return Change("trigger", spec["title"], "create")
        if all(_same(current.get(k), v) for k, v in spec.items()):
            return Change("trigger", spec["title"], "unchanged")
        if not self.dry_run:
            self._send("PUT", f"/api/v2/triggers/{current['id']}.json", {"trigger": spec})
        return Change("trigger", spec["title"], "update")

    def _send(self, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.zendesk.request(method, path, payload)


def _same(current: Any, wanted: Any) -> bool:
    # Zendesk gives actions' values back as it stores them: compare as JSON, loosely.
    return json.dumps(current, sort_keys=True) == json.dumps(wanted, sort_keys=True)
