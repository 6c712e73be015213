"""Fuzzing `/webhooks/zendesk` (hypothesis): signed, mutated trigger bodies through the app.

Each example takes one of the trigger payloads under tests/payloads/zendesk/trigger/ (our
template rendered with made-up values, labelled handwritten in SOURCES.md: a trigger's body is
whatever the trigger asks for, so there is no other kind to record), mutates it (wrong JSON
types, huge and odd values, deep nesting, lone surrogates, NUL, odd Unicode digits, duplicate
keys, unescaped quotes in the comment text), signs it as Zendesk does with a fresh timestamp,
and POSTs it through the Flask test client of `create_app(settings)`. Whatever a sender sends:
- never a 5xx, never a traceback; every 4xx carries a JSON reason;
- every item a 2xx accepted is in the store, and processing it (test doubles for the
  helpdesk and X) ends done or dead, with its outcome or reason, never in a retry.

`DESKBRIDGE_FUZZ_EXAMPLES=N` runs N examples instead of the bounded default; with
`DESKBRIDGE_FUZZ_REPORT=path` the counts (distinct inputs, statuses) are written there.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.config import parse_settings
from integrations.pipeline import Pipeline
from integrations.runtime import Runtime
from integrations.store import ItemStatus
from integrations.zendesk.webhooks import sign
from tests.conftest import SETTINGS_TEMPLATE, FakeClock
from tests.doubles import RecordingChannel, RecordingHelpdesk
from tests.factories import message
from webhook_server import create_app

TRIGGERS = Path(__file__).resolve().parents[1] / "payloads" / "zendesk" / "trigger"
RECORDED = sorted(p for p in TRIGGERS.iterdir() if p.name.startswith("handwritten_"))
SECRET = "zendesk-fuzz-signing-secret"
URL = "/webhooks/zendesk/hd"
EXAMPLES = int(os.environ.get("DESKBRIDGE_FUZZ_EXAMPLES", "300"))
SEEDED_TICKET = "1001"  # the fake helpdesk's first ticket: it has a conversation on X
SEEDED_COMMENT = "54509304133531"  # the recorded payloads' comment id

def config_text(tmp: Path) -> str:
    """tests/conftest.py's settings, with the Zendesk webhook's signing secret."""
    text = SETTINGS_TEMPLATE.format(store_url=f"sqlite:///{tmp}/store.db",
                                    queue_url=f"sqlite:///{tmp}/queue.db",
                                    queue_name="zendesk-fuzz", queue_extra="")
    token = 'token = "zd-test-token-value"'
    assert token in text
    return text.replace(token, f'{token}\nwebhook_secret = "{SECRET}"')

# ---------------------------------------------------------------- mutations

FIELDS = ["event", "ticket_id", "ticket_status", "tags", "requester_id", "comment_id",
          "comment_public", "author_id", "author_role", "created_at", "author_name",
          "comment_body"]
ODD_DIGITS = ["\u0661\u0662", "\u00b2", "\u07c1", "\u0967\u0968", "\uff11\uff12",
              "\U0001d7cf", "\u2460", "\u0e51"]  # Arabic-Indic, superscript, NKo, Devanagari,
#                                                  fullwidth, mathematical, circled, Thai
ODD_STRINGS = ["\ud800", "1\ud800", "\udfff\ud800", "a\x00b", "\x00", "\u202e", "\ufeff1",
               "{{ticket.id}}", "9" * 21, "9" * 300, "-1", " 12", "1e3", "0x1f", "", " ",
               "true", "null", "\\", '"', "\n", "\u2028", "35436\n", "x" * 5000]
MARK = "@@raw@@"

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.integers(min_value=2**63, max_value=10**40), st.text(max_size=30),
    st.sampled_from(ODD_DIGITS + ODD_STRINGS))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
# Text spliced in where a value goes: what no JSON library writes on its own.
raw_values = st.one_of(
    st.integers(min_value=30, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=30, max_value=600).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from(["9" * 5000, "1" + "0" * 400, "1e400", "-0", "NaN", "Infinity",
                     '"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"', '"1\\u0000"']))


@st.composite
def mutated_body(draw: st.DrawFn) -> bytes:
    """One recorded payload, with a few of its fields changed, dropped or spliced."""
    source = draw(st.sampled_from(RECORDED))
    text = source.read_text()
    if source.suffix != ".json":  # the unescaped recording: not JSON, sent as it is or cut
        return text.encode()[:draw(st.integers(min_value=0, max_value=len(text)))]
    body: dict[str, Any] = json.loads(text)
    raw: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        key = draw(st.sampled_from(FIELDS))
        kind = draw(st.sampled_from(["value", "drop", "raw", "seeded", "fresh", "odd_digits"]))
        if kind == "value":
            body[key] = draw(json_values)
        elif kind == "drop":
            body.pop(key, None)
        elif kind == "raw":
            body[key] = MARK
            raw.append(draw(raw_values))
        elif kind == "seeded":  # the ticket and comment the doubles know: goes all the way
            body.update(ticket_id=SEEDED_TICKET, comment_id=SEEDED_COMMENT)
        elif kind == "fresh":  # a comment the helpdesk does not have: a new item, not a dupe
            body["comment_id"] = str(draw(st.integers(min_value=1, max_value=10**20 - 1)))
        else:
            body[key] = draw(st.sampled_from(ODD_DIGITS))
    return _render(body, raw, draw)


def _render(body: dict[str, Any], raw: list[str], draw: st.DrawFn) -> bytes:
    ascii_only = draw(st.booleans()) or _has_surrogate(body)
    text = json.dumps(body, ensure_ascii=ascii_only, indent=draw(st.sampled_from([None, 2])))
    for value in raw:
        text = text.replace(json.dumps(MARK), value, 1)
    splice = draw(st.sampled_from(["none", "duplicate", "quote", "injection"]))
    if splice == "duplicate":  # a key twice: the first must count
        key = draw(st.sampled_from(FIELDS))
        text = text.rstrip()[:-1] + f", {json.dumps(key)}: {json.dumps(draw(json_values))}}}"
    elif splice in ("quote", "injection") and '"comment_body": "' in text:
        extra = '"' if splice == "quote" else '", "ticket_id": "999", "comment_id": "1'
        end = text.rindex('"')
        text = text[:end] + extra + text[end:]
    return text.encode("utf-8")


def _has_surrogate(value: Any) -> bool:
    # A lone surrogate can only travel escaped: no UTF-8 encodes one.
    return any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(value, ensure_ascii=False))


# ---------------------------------------------------------------- the app under fuzz


@dataclass
class Tally:
    """What the fuzzing saw: distinct bodies and the status codes they got."""

    bodies: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def report(self) -> str:
        server_errors = sum(n for s, n in self.statuses.items() if s >= 500)
        return json.dumps({"distinct_inputs": len(self.bodies), "server_errors": server_errors,
                           "statuses": dict(sorted(self.statuses.items())),
                           "processed": dict(self.outcomes)})


@dataclass
class Fuzzed:
    client: FlaskClient
    runtime: Runtime
    clock: FakeClock
    accepted: list[int]


@contextmanager
def fuzzed_app(tmp: Path) -> Iterator[Fuzzed]:
    """The app on a fresh store, a customer's conversation on ticket 1001 with an agent's
    comment on it, and the pipeline's new items noted as the view accepts them."""
    settings = parse_settings(config_text(tmp), environ={})
    clock = FakeClock()
    helpdesk = RecordingHelpdesk("hd", tmp / "writes.jsonl")
    runtime = Runtime(settings, helpdesks={"hd": helpdesk},
                      channels={"acme_x": RecordingChannel()}, clock=clock,
                      rng=random.Random(11))
    runtime.upgrade_schema()
    try:
        for item_id in runtime.pipeline.accept([message("10")]).new_ids:
            assert runtime.pipeline.process(item_id) == "done"
        helpdesk.add_agent_comment(SEEDED_TICKET, SEEDED_COMMENT, "We sturen een nieuwe.")
        fuzzed = Fuzzed(create_app(settings, runtime=runtime).test_client(), runtime, clock, [])
        _note_accepted(runtime.pipeline, fuzzed.accepted)
        yield fuzzed
    finally:
        runtime.close()


def _note_accepted(pipeline: Pipeline, accepted: list[int]) -> None:
    accept = pipeline.accept

    def noting(*args: Any, **kwargs: Any) -> Any:
        result = accept(*args, **kwargs)
        accepted.extend(result.new_ids)
        return result

    pipeline.accept = noting  # type: ignore[method-assign]


def post(app: Fuzzed, body: bytes) -> tuple[int, bytes]:
    timestamp = app.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = app.client.post(URL, data=body, headers={
        "Content-Type": "application/json", "x-zendesk-webhook-invocation-id": "8350205582",
        "x-zendesk-webhook-signature": sign(SECRET, timestamp, body),
        "x-zendesk-webhook-signature-timestamp": timestamp})
    return answer.status_code, answer.get_data()


def check_answer(status: int, data: bytes) -> None:
    assert status < 500, data
    assert b"Traceback" not in data and b'File "' not in data, data
    if 400 <= status < 500:
        reason = json.loads(data).get("reason")
        assert isinstance(reason, str) and reason, data


def check_processed(app: Fuzzed, tally: Tally) -> None:
    while app.accepted:
        item_id = app.accepted.pop()
        assert app.runtime.store.get_item(item_id) is not None  # stored before the 2xx
        result = app.runtime.pipeline.process(item_id)
        assert result in ("done", "dead"), result  # never a retry: nothing a retry can fix
        item = app.runtime.store.get_item(item_id)
        assert item is not None and item.status in ItemStatus.FINISHED
        assert (item.outcome if result == "done" else item.last_error), item
        tally.outcomes[result] += 1


def test_no_signed_body_gets_a_5xx_and_every_accepted_item_settles(tmp_path: Path) -> None:
    tally = Tally()
    with fuzzed_app(tmp_path) as app:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 300,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(mutated_body())
        def one(body: bytes) -> None:
            tally.bodies.add(hashlib.sha256(body).hexdigest())
            status, data = post(app, body)
            tally.statuses[status] += 1
            check_answer(status, data)
            check_processed(app, tally)

        one()
    report = os.environ.get("DESKBRIDGE_FUZZ_REPORT")
    if report:
        Path(report).write_text(tally.report() + "\n")
    assert tally.statuses[200] and sum(tally.statuses.values()) > tally.statuses[200], \
        tally.report()  # the mutations reach both sides of the door
    assert tally.outcomes["done"], tally.report()
