"""`deskbridge inspect x`: DESIGN.md's contract, on recorded payloads."""

from __future__ import annotations

import json
import logging
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


def test_a_default_fields_page_prints_every_post_with_the_author_unknown() -> None:
    # X's documented answer when no expansions or fields are asked for: id and text only.
    lines = inspect(PAYLOADS / "api/users_mentions_200_default_fields_documented.json")
    assert [line["message_id"] for line in lines] == [
        "1375152598945312768", "1375152449594523649", "1375152043455873027",
        "1375151947360174082", "1375151827189137412"]
    assert all(line["author_known"] is False and line["author_id"] == "" for line in lines)
    assert all(str(line["created_at"]).startswith("2021-03-25T18:") for line in lines)


def test_an_empty_dm_page_prints_nothing() -> None:
    assert inspect(PAYLOADS / "api/dm_events_200_empty_recorded.json") == []


def test_a_default_fields_dm_page_prints_its_messages() -> None:
    lines = inspect(PAYLOADS / "api/dm_conversation_events_200_recorded.json")
    assert [(line["kind"], line["text"]) for line in lines] == [
        ("dm", "Testing 2"), ("dm", "Testing 1")]


def test_a_bad_entry_of_a_page_is_skipped_and_the_rest_printed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The recorded mentions page, one post's id made unreadable (hand-modified).
    page = json.loads((PAYLOADS / "api/users_mentions_200_recorded.json").read_bytes())
    page["data"][1]["id"] = "12x"
    page["data"][2]["text"] = {"not": "text"}
    path = tmp_path / "page.json"
    path.write_text(json.dumps(page))
    with caplog.at_level(logging.WARNING, logger="deskbridge.x.poll"):
        lines = inspect(path)
    assert len(lines) == len(page["data"]) - 2
    assert page["data"][0]["id"] == lines[0]["message_id"]
    skipped = [r.getMessage() + " " + str(getattr(r, "error", "")) for r in caplog.records]
    assert any("data[1].id is not an id" in s for s in skipped)
    assert any("data[2].text is not a string" in s for s in skipped)
