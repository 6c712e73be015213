"""`deskbridge zendesk setup`: creates the webhook and triggers once, then changes nothing.

Zendesk is answered by `responses` from a small in-memory account (hand-written, in the
shapes of https://developer.zendesk.com/api-reference/webhooks/webhooks-api/webhooks/ and
.../ticketing/business-rules/triggers/).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import responses
from click.testing import CliRunner

from integrations.cli import cli

API = "https://acme.zendesk.com/api/v2"
CONFIG = """
[server]
public_url = "https://deskbridge.acme.example"
[helpdesks.hd]
type = "zendesk"
subdomain = "acme"
email = "agent@acme.example"
token = "t"
"""


class Account:
    """Webhooks and triggers as Zendesk keeps them (test stand-in)."""

    def __init__(self) -> None:
        self.webhooks: list[dict[str, Any]] = []
        self.triggers: list[dict[str, Any]] = []
        self.writes: list[str] = []

    def install(self, mock: responses.RequestsMock) -> None:
        mock.add_callback("GET", f"{API}/webhooks", lambda r: self._ok({"webhooks": self.webhooks}))
        mock.add_callback("POST", f"{API}/webhooks", self._create_webhook)
        mock.add_callback("GET", f"{API}/triggers.json",
                          lambda r: self._ok({"triggers": self.triggers}))
        mock.add_callback("POST", f"{API}/triggers.json", self._create_trigger)
        mock.add_callback("PUT", re.compile(rf"{API}/triggers/\d+\.json"), self._update_trigger)

    @staticmethod
    def _ok(body: dict[str, Any], status: int = 200) -> tuple[int, dict[str, str], str]:
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    def _create_webhook(self, request: Any) -> tuple[int, dict[str, str], str]:
        webhook = {"id": f"01H{len(self.webhooks)}", **json.loads(request.body)["webhook"]}
        self.webhooks.append(webhook)
        self.writes.append("webhook")
        return self._ok({"webhook": webhook}, 201)

    def _create_trigger(self, request: Any) -> tuple[int, dict[str, str], str]:
        trigger = {"id": 900 + len(self.triggers), **json.loads(request.body)["trigger"]}
        self.triggers.append(trigger)
        self.writes.append("trigger")
        return self._ok({"trigger": trigger}, 201)

    def _update_trigger(self, request: Any) -> tuple[int, dict[str, str], str]:
        trigger_id = int(request.url.rsplit("/", 1)[1].split(".")[0])
        for trigger in self.triggers:
            if trigger["id"] == trigger_id:
                trigger.update(json.loads(request.body)["trigger"])
        self.writes.append("trigger update")
        return self._ok({"trigger": {}})


def run(config: Path, *extra: str) -> list[str]:
    result = CliRunner().invoke(cli, ["zendesk", "setup", "--config", str(config), *extra])
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines()


def test_setup_is_idempotent_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "deskbridge.toml"
    config.write_text(CONFIG)
    account = Account()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        account.install(mock)
        planned = run(config, "--dry-run")
        assert account.writes == []
        assert planned == ["would create    webhook 'deskbridge hd'",
                           "would create    trigger 'deskbridge: agent answer'",
                           "would create    trigger 'deskbridge: identity confirmed'"]
        run(config)
        assert account.writes == ["webhook", "trigger", "trigger"]
        assert run(config) == ["unchanged webhook 'deskbridge hd'",
                               "unchanged trigger 'deskbridge: agent answer'",
                               "unchanged trigger 'deskbridge: identity confirmed'"]
        assert account.writes == ["webhook", "trigger", "trigger"]
        account.triggers[0]["active"] = False  # an admin switched it off by hand
        assert "update    trigger 'deskbridge: agent answer'" in run(config)
    (webhook,) = account.webhooks
    assert webhook["endpoint"] == "https://deskbridge.acme.example/webhooks/zendesk/hd"
    answer = account.triggers[0]
    assert {"field": "comment_is_public", "operator": "is", "value": "true"} in \
        answer["conditions"]["all"]
    action = answer["actions"][0]
    assert action["field"] == "notification_webhook" and action["value"][0] == webhook["id"]
    assert json.loads(action["value"][1])["comment_id"] == "{{ticket.latest_comment.id}}"


def test_setup_finds_its_triggers_past_the_first_page_and_updates_a_moved_webhook() -> None:
    from integrations.zendesk.adapter import ZendeskHelpdesk
    from integrations.zendesk.emulator import ZendeskEmulator
    from integrations.zendesk.emulator import create_app as zendesk_app
    from integrations.zendesk.setup import ZendeskSetup
    from tests.twitter.conftest import served

    emulator = ZendeskEmulator()
    with served(zendesk_app(emulator)) as url:
        zendesk = ZendeskHelpdesk("hd", emulator.helpdesk_settings(url))

        def setup(public_url: str) -> list[str]:
            return [str(c) for c in ZendeskSetup(zendesk, public_url, dry_run=False).run()]

        for n in range(120):  # the account's own triggers: ours come after, on page 2
            zendesk.request("POST", "/api/v2/triggers.json", {"trigger": {
                "title": f"Acme routing {n:03}", "active": True,
                "conditions": {"all": [{"field": "update_type", "operator": "is",
                                        "value": "Create"}], "any": []},
                "actions": [{"field": "priority", "value": "high"}]}})
        assert all(c.startswith("create") for c in setup("https://old.acme.example"))
        moved = setup("https://new.acme.example")
        assert moved[0].startswith("update") and "webhook" in moved[0]
        assert all(c.startswith("unchanged") for c in moved[1:])
    (hook,) = emulator.webhooks()
    assert hook["endpoint"] == "https://new.acme.example/webhooks/zendesk/hd"
    ours = [t for t in emulator.triggers() if t["title"].startswith("deskbridge:")]
    assert len(ours) == 2 and len(emulator.triggers()) == 122
