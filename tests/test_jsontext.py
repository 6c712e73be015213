"""JSON on the hot path: orjson's answer where it is fast, the standard library's elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pytest

from integrations import jsontext


@pytest.mark.parametrize("body", [
    b'{"text": "dank je wel \\ud83d\\ude00", "id": 1900000000000000000}',  # orjson reads it
    b'{"text": "half an emoji \\ud83d"}',  # a lone surrogate: only json reads it
    b'{"score": NaN}',
    b'\xef\xbb\xbf{"bom": true}',  # a UTF-8 byte order mark: only json reads it
])
def test_loads_reads_what_json_reads(body: bytes) -> None:
    expected = json.loads(body)
    got = jsontext.loads(body)
    assert json.dumps(got) == json.dumps(expected)  # NaN != NaN, so compare the text


@pytest.mark.parametrize("body", [b"{not json", b'{"a": 1', "{\"a\": \"\xe9\"}".encode("latin-1")])
def test_loads_refuses_what_json_refuses_with_its_message(body: bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(body)
    with pytest.raises(ValueError) as got:
        jsontext.loads(body)
    assert type(got.value) is type(expected.value) and str(got.value) == str(expected.value)


@pytest.mark.parametrize("value", [
    {"text": "Mijn zaaknummer is 4821 — graag hulp 🙏", "ids": [1, 2], "ok": True, "x": None},
    {"text": "half an emoji \ud83d"},  # no UTF-8 can carry it: written escaped, read back same
    {1: "a key that is not a string"},
])
def test_dumps_round_trips_through_json(value: dict[Any, Any]) -> None:
    written = jsontext.dumps(value)
    written.decode("utf-8")  # always valid UTF-8, whatever the value held
    assert json.loads(written) == json.loads(json.dumps(value))
    assert jsontext.dumps_text(value) == written.decode()
