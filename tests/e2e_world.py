"""A running world for end-to-end tests and benchmarks: the X emulator, the Zendesk emulator
and deskbridge served on loopback, wired as an admin would wire them.

X's deliveries are the recorded mention (tests/payloads/x/account_activity/
tweet_create_mention.json), hand-modified per message (ids, author, text), signed as X signs.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

from integrations.config import load_settings
from integrations.runtime import Runtime
from integrations.twitter.emulator import XEmulator
from integrations.twitter.emulator import create_app as x_app
from integrations.twitter.webhooks import sign
from integrations.zendesk.adapter import ZendeskHelpdesk
from integrations.zendesk.emulator import ZendeskEmulator
from integrations.zendesk.emulator import create_app as zendesk_app
from integrations.zendesk.setup import ZendeskSetup
from tests.test_readme_commands import free_port
from tests.twitter.conftest import served
from webhook_server import create_app

PAYLOAD = Path(__file__).parent / "payloads/x/account_activity/tweet_create_mention.json"
FAR_FUTURE = datetime.now(UTC) + timedelta(days=365)


@dataclass
class World:
    x: XEmulator
    zd: ZendeskEmulator
    runtime: Runtime
    url: str
    consumer_secret: str
    account: str
    next_id: int = 1_950_000_000_000_000_000

    def tweet(self, text: str, *, author: str = "4242", handle: str = "klant",
              reply_to: str | None = None) -> str:
        """X delivers a mention of the brand to deskbridge's webhook; returns the post id."""
        body = copy.deepcopy(json.loads(PAYLOAD.read_bytes()))
        self.next_id += 1
        post = body["tweet_create_events"][0]
        post.update(id=self.next_id, id_str=str(self.next_id), text=text, truncated=False,
                    in_reply_to_status_id_str=reply_to, in_reply_to_status_id=None)
        post["user"].update(id_str=author, screen_name=handle, name=handle.title())
        body["for_user_id"] = self.account
        self._deliver(body)
        return str(self.next_id)

    def dm(self, text: str, *, author: str = "4242", handle: str = "klant") -> str:
        """X delivers a DM to the brand (the recorded DM event, hand-modified)."""
        path = PAYLOAD.parent / "direct_message_events.json"
        body = copy.deepcopy(json.loads(path.read_bytes()))
        self.next_id += 1
        event = body["direct_message_events"][0]
        event["id"] = str(self.next_id)
        event["message_create"]["sender_id"] = author
        event["message_create"]["target"]["recipient_id"] = self.account
        event["message_create"]["message_data"]["text"] = text
        sender = body["users"].pop(next(iter(body["users"])))
        body["users"] = {author: {**sender, "id": author, "screen_name": handle}}
        body["for_user_id"] = self.account
        self._deliver(body)
        return str(self.next_id)

    def delete(self, post_id: str, author: str = "4242") -> None:
        """X tells deskbridge the customer deleted a post (the recorded delete, modified)."""
        path = PAYLOAD.parent / "tweet_delete_events.json"
        body = copy.deepcopy(json.loads(path.read_bytes()))
        body["for_user_id"] = self.account
        body["tweet_delete_events"][0]["status"] = {"id": post_id, "user_id": author}
        self._deliver(body)

    def _deliver(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        answer = requests.post(f"{self.url}/webhooks/x", data=raw, timeout=10, headers={
            "Content-Type": "application/json",
            "X-Twitter-Webhooks-Signature": sign(self.consumer_secret, raw)})
        assert answer.status_code == 200, answer.text

    def settle(self) -> None:
        """Run every queued item, as workers would, until nothing is left."""
        for _ in range(50):
            self.runtime.intake.flush()
            self.runtime.queue.promote_scheduled(FAR_FUTURE)
            if not self.runtime.queue.run_pending(as_of=FAR_FUTURE):
                return

    def comments(self, ticket_id: int) -> list[dict[str, Any]]:
        return self.zd.comments(ticket_id)


@contextmanager
def running_world(tmp_path: Path, latency: float = 0.0) -> Iterator[World]:
    """Everything served on loopback; `latency` seconds added to every Zendesk API call."""
    x, zd = XEmulator(), ZendeskEmulator(first_ticket_id=48213, latency=latency)
    with served(x_app(x)) as x_url, served(zendesk_app(zd)) as zd_url:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        ZendeskSetup(ZendeskHelpdesk("hd", zd.helpdesk_settings(zd_url)), public,
                     dry_run=False).run()
        secret = zd.webhooks()[0]["signing_secret"]
        runtime = Runtime(load_settings(_config(tmp_path, x, x_url, zd, zd_url, secret)))
        runtime.upgrade_schema()
        server = make_server("127.0.0.1", port, create_app(runtime.settings, runtime=runtime),
                             threaded=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield World(x, zd, runtime, public, x.credentials.consumer_secret, x.account.id)
        finally:
            server.shutdown()
            server.server_close()
            runtime.close()


def _config(tmp: Path, x: XEmulator, x_url: str, zd: ZendeskEmulator, zd_url: str,
            secret: str) -> Path:
    c = x.credentials
    path = tmp / "deskbridge.toml"
    path.write_text(f"""
[store]
url = "sqlite:///{tmp}/store.db"
[queue]
url = "sqlite:///{tmp}/queue.db"
lease_seconds = 2.0
sweep_interval_seconds = 1
sweep_grace_seconds = 1.0
[channels.brand]
type = "x"
account_id = "{x.account.id}"
handle = "{x.account.username}"
consumer_key = "{c.consumer_key}"
consumer_secret = "{c.consumer_secret}"
access_token = "{c.access_token}"
access_token_secret = "{c.access_token_secret}"
bearer_token = "{c.bearer_token}"
api_base_url = "{x_url}"
[helpdesks.hd]
type = "zendesk"
subdomain = "{zd.subdomain}"
email = "{zd.credentials.email}"
token = "{zd.credentials.token}"
webhook_secret = "{secret}"
base_url = "{zd_url}"
[[mappings]]
name = "brand"
channel = "brand"
helpdesk = "hd"
""")
    return path




def calls(zd: ZendeskEmulator) -> int:
    """Zendesk API calls the emulator has answered so far."""
    return sum(zd.calls.values())


def requester(world: World, author: str = "4242", handle: str = "klant") -> int:
    """A Zendesk user deskbridge knows as this X user (external_id x:<id>)."""
    user = world.zd.add_user(handle.title(), external_id=f"x:{author}", twitter=handle)
    return int(user["id"])
