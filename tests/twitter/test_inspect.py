"""`deskbridge inspect x`: DESIGN.md's contract, on recorded payloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from integrations.cli import cli

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "x"
CONTRACT = {"message_id", "kind", "author_id", "author_handle", "text", "in_reply_to_id",
            "conversation_id", "is_own"}
KINDS = {"mention", "reply", "quote", "retweet", "dm", "delete", "unknown"}


def inspect(path: Path, *extra: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(cli, ["inspect", "x", str(path), *extra])
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("name", sorted(p.relative_to(PAYLOADS).as_posix() for p in
                                        PAYLOADS.glob("*/*.json") if p.parent.name != "api"
                                        and p.name != "envelope.json"))
def test_every_webhook_payload_prints_contract_lines(name: str) -> None:
    for line in inspect(PAYLOADS / name):
        assert CONTRACT <= line.keys() and line["kind"] in KINDS
        assert isinstance(line["message_id"], str) and isinstance(line["author_id"], str)
        assert isinstance(line["is_own"], bool)


def test_full_text_and_reply_fields() -> None:
    (line,) = inspect(PAYLOADS / "account_activity/tweet_create_mention.json")
    assert line["message_id"] == "1332557345071644672" and line["kind"] == "reply"
    assert line["in_reply_to_id"] == "1332252354599555074" and line["author_handle"] == "TanuLearns"


def test_v2_api_response_with_account() -> None:
    response = next(p for p in (PAYLOADS / "api").glob("*mentions*200*.json")
                    if not p.name.endswith(".headers.json"))
    lines = inspect(response, "--account", "2244994945")
    assert lines and all(CONTRACT <= line.keys() for line in lines)


def test_not_an_x_payload_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    result = CliRunner().invoke(cli, ["inspect", "x", str(bad)])
    assert result.exit_code == 2 and "no X webhook events" in result.stderr
