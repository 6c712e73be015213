"""X's CRC challenge, sans I/O: only a token shaped like X's is answered (issue 11)."""

from __future__ import annotations

import json
import string
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from integrations.errors import PayloadError
from integrations.twitter.webhooks import CRC_TOKEN_MAX_LENGTH, check_crc_token, crc_response

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "x"
QUERIES = [*(PAYLOADS / "crc" / "recorded_queries.txt").read_text().split(),
           *(PAYLOADS / "crc" / "documented_queries.txt").read_text().split()]
TOKENS = [parse_qs(q)["crc_token"][0] for q in QUERIES]


@pytest.mark.parametrize("token", TOKENS)
def test_x_tokens_are_answered(token: str) -> None:
    check_crc_token(token)
    assert crc_response("secret", token)["response_token"].startswith("sha256=")


def test_no_character_json_structure_needs_is_allowed() -> None:
    # An object needs braces, quotes and a colon; arrays and more members need brackets and
    # commas; whitespace, backslash escapes and non-ASCII are never in base64 either.
    for char in '{}[]":, \t\r\n\\' + "\u00e9\u0661\ufeff\x00":
        with pytest.raises(PayloadError, match="crc_token"):
            crc_response("secret", f"M2RkODJk{char}ZmMt")


def test_every_printable_ascii_outside_base64_is_refused() -> None:
    base64_chars = set(string.ascii_letters + string.digits + "+/-_=")
    for char in sorted(set(string.printable) - base64_chars):
        with pytest.raises(PayloadError):
            check_crc_token(f"abc{char}def")


def test_length_and_padding_are_bounded() -> None:
    check_crc_token("A" * CRC_TOKEN_MAX_LENGTH)
    check_crc_token("MTQ4Nzk3OTc0NDI1MA==")  # base64 with its padding
    for token in ["", "A" * (CRC_TOKEN_MAX_LENGTH + 1), "abc===", "ab=cd", "=abc"]:
        with pytest.raises(PayloadError, match="crc_token"):
            check_crc_token(token)


def test_a_recorded_event_body_is_refused_whatever_its_form() -> None:
    body = (PAYLOADS / "account_activity" / "direct_message_events.json").read_text()
    for form in (body, json.dumps(json.loads(body), separators=(",", ":"))):
        with pytest.raises(PayloadError):
            crc_response("secret", form)
