"""`/webhooks/zendesk` over HTTP: the shared security case, replies, notes, confirmations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from integrations.config import Settings, parse_settings
from integrations.runtime import Runtime
from integrations.store import IdentityRecord
from integrations.zendesk.webhooks import sign
from tests.webhook_contract import WebhookSecurityContract
from webhook_server import create_app

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "zendesk" / "trigger"
SECRET = "zendesk-signing-secret-for-tests"
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
URL = "/webhooks/zendesk/acme"

CONFIG = """
[store]
url = "sqlite:///{tmp}/store.db"
[queue]
url = "sqlite:///{tmp}/queue.db"
[helpdesks.acme]
type = "zendesk"
subdomain = "acme"
email = "support@acme.example"
token = "zd-test-token"
{secret_line}
{extra}
"""

OTHER_ZENDESK = """
[helpdesks.other]
type = "zendesk"
subdomain = "other"
email = "support@other.example"
token = "zd-other-token"
webhook_secret = "other-signing-secret"
"""


def settings_for(tmp: Path, extra: str = "", secret: str | None = SECRET) -> Settings:
    secret_line = f'webhook_secret = "{secret}"' if secret else ""
    return parse_settings(CONFIG.format(tmp=tmp, secret_line=secret_line, extra=extra), environ={})


def runtime_for(settings: Settings) -> Runtime:
    rt = Runtime(settings, clock=lambda: NOW)
    rt.upgrade_schema()
    return rt


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = runtime_for(settings_for(tmp_path))
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime.settings, runtime=runtime).test_client()


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


# The five headers of every webhook request, from Zendesk's documentation (see SOURCES.md).
DOC_HEADERS = json.loads((PAYLOADS.parent / "docs" / "request_headers.json").read_text())


def signed(body: bytes, *, secret: str = SECRET, age_seconds: float = 0,
           invocation: str = "8350205582") -> dict[str, str]:
    """The documented headers, with this invocation, timestamp and the real signature."""
    timestamp = (NOW - timedelta(seconds=age_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**DOC_HEADERS, "Content-Type": "application/json",
            "x-zendesk-webhook-invocation-id": invocation,
            "x-zendesk-webhook-signature": sign(secret, timestamp, body),
            "x-zendesk-webhook-signature-timestamp": timestamp}


def stored(runtime: Runtime) -> int:
    return sum(runtime.store.count_items().values())


class TestZendeskWebhookSecurity(WebhookSecurityContract):
    path = URL
    signs_timestamp = True

    def valid_body(self) -> bytes:
        return payload("handwritten_comment_public.json")

    def unknown_event_body(self) -> bytes:
        return b'{"event": "ticket_solved", "ticket_id": "35436"}'

    def headers(self, body: bytes, *, secret: str | None = None,
                age_seconds: float = 0) -> dict[str, str]:
        return signed(body, secret=secret or SECRET, age_seconds=age_seconds)


class TestZendeskWebhookSecurityOnTheSingleHelpdeskURL(TestZendeskWebhookSecurity):
    path = "/webhooks/zendesk"


def test_an_agent_reply_is_accepted_once(client: FlaskClient, runtime: Runtime) -> None:
    body = payload("handwritten_comment_public.json")
    first = client.post(URL, data=body, headers=signed(body))
    retried = client.post(URL, data=body, headers=signed(body))  # same invocation, retried
    again = client.post(URL, data=body, headers=signed(body, invocation="8350205999"))
    assert first.get_json() == {"accepted": 1, "duplicates": 0}
    assert retried.get_json() == again.get_json() == {"accepted": 0, "duplicates": 1}
    item = runtime.store.find_item("helpdesk", "acme", "comment:54509304133531")
    assert item is not None and item.status == "accepted" and item.event_type == "agent_reply"
    assert item.conversation_key == "helpdesk:acme:35436"
    assert runtime.queue.flush_handoff()  # the queue write follows the answer
    assert stored(runtime) == 1 and runtime.huey.pending_count() == 1


def test_a_reply_without_comment_id_is_refused_and_nothing_stored(
    client: FlaskClient, runtime: Runtime,
) -> None:
    body = payload("handwritten_comment_without_id.json")
    answer = client.post(URL, data=body, headers=signed(body))
    assert answer.status_code == 400 and "comment_id is missing" in answer.get_json()["reason"]
    assert stored(runtime) == 0


@pytest.mark.parametrize("field", ["ticket_id", "comment_id"])
@pytest.mark.parametrize("value", ["\u0661\u0662", "\u00b2", "5\ud800", "9" * 300])
def test_odd_digits_in_ids_are_a_400_naming_the_field(
    client: FlaskClient, runtime: Runtime, field: str, value: str,
) -> None:
    # "١٢" and "²" pass str.isdigit(); a lone surrogate once gave a 500; 300 digits a 503.
    body = json.loads(payload("handwritten_comment_public.json"))
    body[field] = value
    raw = json.dumps(body).encode()
    answer = client.post(URL, data=raw, headers=signed(raw))
    assert answer.status_code == 400 and field in answer.get_json()["reason"]
    assert stored(runtime) == 0


def test_an_internal_note_is_stored_but_never_sent(client: FlaskClient, runtime: Runtime) -> None:
    # Accepted at the edge on purpose: the worker's handler alone decides what reaches a
    # customer, and its outcome is recorded where the dashboard shows it.
    body = payload("handwritten_comment_internal_note.json")
    assert client.post(URL, data=body, headers=signed(body)).get_json()["accepted"] == 1
    item = runtime.store.find_item("helpdesk", "acme", "comment:54509363035291")
    assert item is not None
    assert runtime.pipeline.process(item.id) == "done"
    done = runtime.store.get_item(item.id)
    assert done is not None and done.outcome == "ignore: an internal note is never sent"


def test_the_customers_own_comment_is_ignored(client: FlaskClient, runtime: Runtime) -> None:
    body = payload("handwritten_comment_by_requester.json")
    response = client.post(URL, data=body, headers=signed(body))
    assert response.status_code == 200 and "customer's own" in response.get_json()["ignored"]
    assert stored(runtime) == 0


def test_the_verified_tag_confirms_the_pending_claim(client: FlaskClient, runtime: Runtime) -> None:
    for user, ticket in (("42", "35436"), ("43", "99999")):
        runtime.store.save_identity(IdentityRecord(
            channel="x", social_user_id=user, handle=f"user{user}", helpdesk="acme",
            helpdesk_user_id="20978392", status="pending", ticket_id=ticket), NOW)
    body = payload("handwritten_tagged_verified.json")
    response = client.post(URL, data=body, headers=signed(body))
    assert response.status_code == 200 and response.get_json() == {"confirmed": 1}
    assert [i.status for i in runtime.store.identities_for("x", "42")] == ["verified"]
    assert [i.status for i in runtime.store.identities_for("x", "43")] == ["pending"]
    assert stored(runtime) == 0  # a confirmation is not an inbox item
    again = client.post(URL, data=body, headers=signed(body))
    assert again.get_json() == {"confirmed": 0}


def test_an_answer_that_carries_the_verified_tag_confirms_the_claim_first(
    client: FlaskClient, runtime: Runtime,
) -> None:
    # A macro tags and answers in one update; the "tagged" webhook may come later, or never.
    runtime.store.save_identity(IdentityRecord(
        channel="x", social_user_id="42", handle="user42", helpdesk="acme",
        helpdesk_user_id="20978392", status="pending", ticket_id="35436"), NOW)
    body = payload("handwritten_comment_with_verified_tag.json")
    response = client.post(URL, data=body, headers=signed(body))
    assert response.get_json() == {"accepted": 1, "duplicates": 0}
    assert [i.status for i in runtime.store.identities_for("x", "42")] == ["verified"]


def test_a_tag_on_another_helpdesks_ticket_confirms_nothing_here(tmp_path: Path) -> None:
    rt = runtime_for(settings_for(tmp_path, OTHER_ZENDESK))
    rt.store.save_identity(IdentityRecord(
        channel="x", social_user_id="42", handle="user42", helpdesk="acme",
        helpdesk_user_id="20978392", status="pending", ticket_id="35436"), NOW)
    body = payload("handwritten_tagged_verified.json")
    response = create_app(rt.settings, runtime=rt).test_client().post(
        "/webhooks/zendesk/other", data=body, headers=signed(body, secret="other-signing-secret"))
    assert response.get_json() == {"confirmed": 0}
    assert [i.status for i in rt.store.identities_for("x", "42")] == ["pending"]
    rt.close()


def test_an_unknown_helpdesk_is_404(client: FlaskClient, runtime: Runtime) -> None:
    body = payload("handwritten_comment_public.json")
    response = client.post("/webhooks/zendesk/nope", data=body, headers=signed(body))
    assert response.status_code == 404 and response.get_json()["error"] == "unknown_helpdesk"
    assert stored(runtime) == 0


def test_several_helpdesks_need_a_url_each(tmp_path: Path) -> None:
    rt = runtime_for(settings_for(tmp_path, OTHER_ZENDESK))
    client = create_app(rt.settings, runtime=rt).test_client()
    body = payload("handwritten_comment_public.json")
    shared = client.post("/webhooks/zendesk", data=body, headers=signed(body))
    assert shared.status_code == 400
    assert "/webhooks/zendesk/<helpdesk>" in shared.get_json()["reason"]
    crossed = client.post("/webhooks/zendesk/other", data=body, headers=signed(body))
    assert crossed.status_code == 401  # acme's secret does not sign for "other"
    own = client.post("/webhooks/zendesk/other", data=body,
                      headers=signed(body, secret="other-signing-secret"))
    assert own.get_json()["accepted"] == 1
    assert rt.store.find_item("helpdesk", "other", "comment:54509304133531") is not None
    rt.close()


def test_a_helpdesk_without_webhook_secret_refuses_everything(tmp_path: Path) -> None:
    rt = runtime_for(settings_for(tmp_path, secret=None))
    body = payload("handwritten_comment_public.json")
    response = create_app(rt.settings, runtime=rt).test_client().post(
        URL, data=body, headers=signed(body))
    assert response.status_code == 401
    assert "no Zendesk webhook secret" in response.get_json()["reason"]
    assert sum(rt.store.count_items().values()) == 0
    rt.close()


def test_no_zendesk_helpdesk_means_404_on_the_bare_url(tmp_path: Path) -> None:
    text = f'[store]\nurl = "sqlite:///{tmp_path}/store.db"\n[queue]\nurl = "sqlite:///{tmp_path}/q.db"\n'
    rt = runtime_for(parse_settings(text, environ={}))
    body = json.dumps({"event": "comment"}).encode()
    response = create_app(rt.settings, runtime=rt).test_client().post(
        "/webhooks/zendesk", data=body, headers=signed(body))
    assert response.status_code == 404 and "no Zendesk helpdesk" in response.get_json()["reason"]
    rt.close()
