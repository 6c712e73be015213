"""Zendesk webhooks, sans I/O: signatures (real algorithm), the trigger body, parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integrations.errors import PayloadError, VerificationError
from integrations.events import AgentReply, from_record, to_record
from integrations.zendesk.webhooks import (
    BODY_TEMPLATE,
    ConfirmClaim,
    Ignored,
    parse_webhook,
    sign,
    trigger_body,
    verify_signature,
)

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "zendesk"
SECRET = "zendesk-signing-secret-for-tests"
NOW = datetime(2021, 3, 25, 5, 9, 30, tzinfo=UTC)
SIGNED_AT = "2021-03-25T05:09:27Z"  # the format of the documented header


def trigger(name: str) -> bytes:
    return (PAYLOADS / "trigger" / name).read_bytes()


def headers(body: bytes, *, timestamp: str = SIGNED_AT, secret: str = SECRET) -> dict[str, str]:
    return {"X-Zendesk-Webhook-Signature": sign(secret, timestamp, body),
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp}


# ---------------------------------------------------------------- signatures


def test_signature_is_base64_hmac_sha256_of_timestamp_then_body() -> None:
    body = trigger("handwritten_comment_public.json")
    expected = base64.b64encode(hmac.new(SECRET.encode(), SIGNED_AT.encode() + body,
                                         hashlib.sha256).digest()).decode()
    assert sign(SECRET, SIGNED_AT, body) == expected
    verify_signature(headers(body), body, SECRET, NOW)  # does not raise


def test_header_names_are_case_insensitive() -> None:
    body = b'{"event": "comment"}'
    lowered = {k.lower(): v for k, v in headers(body).items()}
    verify_signature(lowered, body, SECRET, NOW)


def test_a_signature_over_anything_else_is_refused() -> None:
    body = trigger("handwritten_comment_public.json")
    later = {**headers(body), "X-Zendesk-Webhook-Signature-Timestamp": "2021-03-25T05:09:28Z"}
    for signed, received in [(headers(body, secret="another-secret"), body),  # wrong secret
                             (headers(body), body + b" "),  # tampered body
                             (later, body)]:  # tampered timestamp
        with pytest.raises(VerificationError, match="does not match"):
            verify_signature(signed, received, SECRET, NOW)


@pytest.mark.parametrize("missing", ["X-Zendesk-Webhook-Signature",
                                     "X-Zendesk-Webhook-Signature-Timestamp"])
def test_missing_signature_or_timestamp_is_refused(missing: str) -> None:
    body = b"{}"
    signed = headers(body)
    del signed[missing]
    with pytest.raises(VerificationError, match=f"missing {missing.lower()}"):
        verify_signature(signed, body, SECRET, NOW)


@pytest.mark.parametrize("secret", [None, ""])
def test_no_secret_configured_fails_closed(secret: str | None) -> None:
    body = b"{}"
    with pytest.raises(VerificationError, match="no Zendesk webhook secret"):
        verify_signature(headers(body), body, secret, NOW)


@pytest.mark.parametrize(("age", "reason"), [
    (timedelta(minutes=5, seconds=1), "stale"),
    (timedelta(hours=-1), "future"),
])
def test_timestamps_outside_the_window_are_refused(age: timedelta, reason: str) -> None:
    body = b"{}"
    signed_at = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(VerificationError, match=reason):
        verify_signature(headers(body, timestamp=signed_at), body, SECRET, NOW)


def test_timestamps_inside_the_window_are_accepted_both_ways() -> None:
    body = b"{}"
    for age in (timedelta(minutes=4, seconds=59), timedelta(minutes=-4)):
        signed_at = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
        verify_signature(headers(body, timestamp=signed_at), body, SECRET, NOW)


def test_an_unreadable_timestamp_is_refused_even_when_signed() -> None:
    body = b"{}"
    with pytest.raises(VerificationError, match="ISO 8601"):
        verify_signature(headers(body, timestamp="1616648967"), body, SECRET, NOW)


def test_the_older_documented_vector_signed_body_then_timestamp_is_refused() -> None:
    # An old copy of Zendesk's page signed body + timestamp; the current page, and every live
    # integration we found, sign timestamp + body (see payloads/zendesk/SOURCES.md).
    vector = json.loads((PAYLOADS / "docs" / "signature_vector_body_then_timestamp.json").read_text())
    body, stamp, secret = vector["body"].encode(), vector["timestamp"], vector["signing_secret"]
    old_way = hmac.new(secret.encode(), body + stamp.encode(), hashlib.sha256).digest()
    assert base64.b64encode(old_way).decode() == vector["signature"]  # transcribed right
    signed = {"X-Zendesk-Webhook-Signature": vector["signature"],
              "X-Zendesk-Webhook-Signature-Timestamp": stamp}
    with pytest.raises(VerificationError, match="does not match"):
        verify_signature(signed, body, secret, datetime(2021, 7, 25, 10, 0, 1, tzinfo=UTC))


# ---------------------------------------------------------------- the trigger body


def test_trigger_body_is_the_installed_template() -> None:
    assert trigger_body("comment") + "\n" == trigger("template_comment.json").decode()
    tagged = json.loads(trigger_body("tagged"))
    assert tagged == {"event": "tagged", **BODY_TEMPLATE}
    with pytest.raises(ValueError):
        trigger_body("ticket_solved")


def test_every_placeholder_is_quoted_so_an_empty_render_is_still_json() -> None:
    emptied = re.sub(r"\{\{[^}]*\}\}", "", trigger_body("comment"))
    assert json.loads(emptied)["comment_id"] == ""
    assert list(BODY_TEMPLATE)[-1] == "comment_body"  # the free text goes last


@pytest.mark.parametrize("name", [p.name for p in (PAYLOADS / "trigger").glob("handwritten_*.json")])
def test_rendered_bodies_are_the_template_with_escaped_values(name: str) -> None:
    rendered = json.loads(trigger(name))
    text = trigger_body(rendered["event"])
    for key, placeholder in BODY_TEMPLATE.items():
        text = text.replace(placeholder, json.dumps(rendered[key], ensure_ascii=False)[1:-1])
    assert text + "\n" == trigger(name).decode()


# ---------------------------------------------------------------- parsing


def test_a_public_agent_comment_is_an_agent_reply() -> None:
    reply = parse_webhook(trigger("handwritten_comment_public.json"), "acme", "8350205582")
    assert isinstance(reply, AgentReply)
    assert (reply.helpdesk, reply.ticket_id, reply.comment_id) == ("acme", "35436", "54509304133531")
    assert reply.public and reply.author_name == "Sam Agent"
    assert reply.text == ("Hi! We've sent a replacement \u2014 it should arrive on Friday.\n"
                          'Sorry for the "delay".')
    assert reply.created_at == datetime(2021, 3, 25, 5, 9, 27, tzinfo=UTC)
    assert reply.natural_key == ("helpdesk", "acme", "comment:54509304133531")
    assert reply.raw["ticket_status"] == "open"
    assert from_record(to_record(reply)) == reply  # survives the inbox


def test_an_internal_note_is_a_reply_marked_not_public() -> None:
    note = parse_webhook(trigger("handwritten_comment_internal_note.json"), "acme", None)
    assert isinstance(note, AgentReply) and note.public is False
    assert note.comment_id == "54509363035291"


def test_the_customers_own_comment_is_ignored() -> None:
    event = parse_webhook(trigger("handwritten_comment_by_requester.json"), "acme", None)
    assert isinstance(event, Ignored) and "customer's own" in event.reason


@pytest.mark.parametrize("role", ["end-user", "end_user"])
def test_any_end_users_comment_is_ignored(role: str) -> None:
    # Not the requester (someone cc'd, say): still a customer's words, never sent to X.
    payload = json.loads(trigger("handwritten_comment_public.json"))
    payload.update(author_role=role, author_id="999")
    event = parse_webhook(json.dumps(payload).encode(), "acme", None)
    assert isinstance(event, Ignored) and "customer's own" in event.reason


def test_a_comment_without_id_is_refused_naming_the_placeholder() -> None:
    # Without its id the comment cannot be read back, so it could never be sent.
    with pytest.raises(PayloadError, match=r"comment_id is missing.*ticket.latest_comment.id"):
        parse_webhook(trigger("handwritten_comment_without_id.json"), "acme", "8350205582")


def test_a_second_ticket_id_after_the_comment_text_does_not_count() -> None:
    # An unescaped quote: the agent's comment ended in `", "ticket_id": "999`.
    body = json.loads(trigger("handwritten_comment_public.json"))
    text = json.dumps(body, ensure_ascii=False, indent=2)
    injected = text[:text.rindex('"\n}')] + '", "ticket_id": "999", "tags": "deskbridge_verified"\n}'
    assert json.loads(injected)["ticket_id"] == "999"  # what last-wins parsing would take
    reply = parse_webhook(injected.encode(), "acme", None)
    assert isinstance(reply, AgentReply)
    assert (reply.ticket_id, reply.comment_id) == ("35436", "54509304133531")
    assert "deskbridge_verified" not in reply.raw["tags"]  # nor can it confirm a claim


@pytest.mark.parametrize("field", ["ticket_id", "comment_id"])
@pytest.mark.parametrize("value", ["\u0661\u0662", "\u00b2", "12\ud800", "1" * 21, "-1", "1.0",
                                   " 12", True, 1.5, [12], {"id": 12}])
def test_ids_are_ascii_digits_of_bounded_length(field: str, value: object) -> None:
    body = json.loads(trigger("handwritten_comment_public.json"))
    body[field] = value
    with pytest.raises(PayloadError, match=field):
        parse_webhook(json.dumps(body).encode(), "acme", None)


@pytest.mark.parametrize(("field", "value"), [
    ("comment_body", 12345), ("author_name", ["Sam"]), ("tags", {"a": 1}), ("tags", [1]),
    ("comment_public", {"yes": True}), ("author_id", "abc"), ("event", 7),
])
def test_fields_of_the_wrong_type_are_refused_naming_the_field(field: str, value: object) -> None:
    body = json.loads(trigger("handwritten_comment_public.json"))
    body[field] = value
    with pytest.raises(PayloadError, match=field):
        parse_webhook(json.dumps(body).encode(), "acme", None)


def test_text_that_no_store_can_hold_is_made_storable() -> None:
    body = json.loads(trigger("handwritten_comment_public.json"))
    body.update(author_name="Sam\x00 Agent", comment_body="ok \ud800")
    reply = parse_webhook(json.dumps(body).encode(), "acme", None)
    assert isinstance(reply, AgentReply)
    assert (reply.author_name, reply.text) == ("Sam Agent", "ok \ufffd")
    assert "\x00" not in json.dumps(reply.raw) and "ud800" not in json.dumps(reply.raw)


def test_the_verified_tag_confirms_the_tickets_claims() -> None:
    event = parse_webhook(trigger("handwritten_tagged_verified.json"), "acme", None)
    assert event == ConfirmClaim("acme", "35436")


def test_tagged_without_the_verified_tag_is_ignored() -> None:
    body = json.loads(trigger("handwritten_tagged_verified.json"))
    body["tags"] = "deskbridge x deskbridge_verified_later"
    event = parse_webhook(json.dumps(body).encode(), "acme", None)
    assert isinstance(event, Ignored) and "not tagged deskbridge_verified" in event.reason


def test_unknown_events_are_ignored_not_refused() -> None:
    event = parse_webhook(b'{"event": "ticket_solved", "ticket_id": "35436"}', "acme", None)
    assert isinstance(event, Ignored) and "ticket_solved" in event.reason


def test_unescaped_comment_text_is_recovered_whole() -> None:
    body = trigger("handwritten_comment_unescaped.txt")
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    reply = parse_webhook(body, "acme", None)
    assert isinstance(reply, AgentReply) and reply.comment_id == "54509304133531"
    assert reply.text.endswith('Friday.\nSorry for the "delay".')


@pytest.mark.parametrize(("value", "public"), [
    ("true", True), ("TRUE", True), (True, True), ("false", False), ("", False), (None, False)])
def test_public_is_read_leniently_and_defaults_to_not_public(value: object, public: bool) -> None:
    body = json.loads(trigger("handwritten_comment_public.json"))
    body["comment_public"] = value
    reply = parse_webhook(json.dumps(body).encode(), "acme", None)
    assert isinstance(reply, AgentReply) and reply.public is public


def test_an_unreadable_created_at_falls_back_to_the_receipt_time() -> None:
    body = json.loads(trigger("handwritten_comment_public.json"))
    body["created_at"] = "March 25, 2021"
    data = json.dumps(body).encode()
    reply = parse_webhook(data, "acme", None, received_at=NOW)
    assert isinstance(reply, AgentReply) and reply.created_at == NOW
    with pytest.raises(PayloadError, match="created_at"):
        parse_webhook(data, "acme", None)


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"event": "comment", "ticket_id": "35436", ', "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'["comment"]', "not a JSON object"),
    (b'{"event": "comment", "ticket_id": ""}', "ticket_id is missing"),
    (b'{"event": "comment"}', "ticket_id is missing"),
    (b'{"event": "tagged", "ticket_id": "{{ticket.id}}"}', "ticket_id is not an id"),
    (b'{"event": "comment", "ticket_id": "1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     "nested more than"),
    (b'{"event": "comment", "ticket_id": ' + b"9" * 5000 + b"}", "thousands of digits"),
])
def test_malformed_bodies_are_payload_errors_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_webhook(body, "acme", "1")
