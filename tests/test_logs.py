"""Structured logs: one line per accepted item and per outcome, keyed; secrets redacted;
floods throttled."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integrations.config import Settings
from integrations.logs import Admission, LogThrottle, configure_logging
from integrations.runtime import Runtime
from tests.conftest import EpochClock
from tests.doubles import RecordingHelpdesk
from tests.factories import message


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging("INFO", "json", ["cs-test-secret-value"], stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    for handler in logging.getLogger().handlers:
        handler.flush()  # the writer thread writes what is queued
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_line_per_accepted_item_and_outcome(
    tmp_path: Path, make_settings: Callable[..., Settings], json_log: io.StringIO,
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    runtime = Runtime(settings, helpdesks={"hd": RecordingHelpdesk("hd", tmp_path / "w")})
    runtime.upgrade_schema()
    (item_id,) = runtime.pipeline.accept([message("5"), message("5")]).new_ids
    runtime.pipeline.process(item_id)
    keyed = [(line["event"], line["key"]) for line in lines(json_log) if "event" in line]
    assert keyed == [("accepted", "x/1000/5"), ("duplicate", "x/1000/5"), ("done", "x/1000/5")]
    done = next(line for line in lines(json_log) if line.get("event") == "done")
    assert str(done["outcome"]).startswith("create on hd ticket 1001")
    runtime.close()


def test_a_secret_that_slips_into_a_log_line_is_redacted(json_log: io.StringIO) -> None:
    logging.getLogger("deskbridge.test").warning(
        "provider said: bad token cs-test-secret-value", extra={"detail": "cs-test-secret-value"})
    (line,) = lines(json_log)
    assert "cs-test-secret-value" not in json_log.getvalue()
    assert line["msg"] == "provider said: bad token [redacted]" and line["detail"] == "[redacted]"


def test_a_flood_writes_a_bounded_number_of_lines_then_its_count() -> None:
    clock = EpochClock(now=1000.0)
    throttle = LogThrottle(burst=10, interval=60.0, clock=clock)
    first = [throttle.admit(("/webhooks/x", "unverified")) for _ in range(10_000)]
    assert sum(a.write for a in first) == 10 and all(a.suppressed == 0 for a in first)
    # Another kind has its own allowance: one flood does not hide another refusal.
    assert throttle.admit(("/webhooks/zendesk", "unverified")).write
    clock.now += 59.9
    assert not throttle.admit(("/webhooks/x", "unverified")).write
    clock.now += 0.1  # the window reopens: the next line comes with what was left out
    assert throttle.admit(("/webhooks/x", "unverified")) == Admission(write=True, suppressed=9_991)
    clock.now += 60
    assert throttle.admit(("/webhooks/x", "unverified")) == Admission(write=True, suppressed=0)


def test_kinds_past_the_limit_share_one_allowance() -> None:
    throttle = LogThrottle(burst=2, interval=60.0, clock=EpochClock(now=0.0), max_kinds=3)
    written = [throttle.admit(("/p", str(n))).write for n in range(1_000)]
    assert written[:3] == [True] * 3 and sum(written) == 3 + 2  # 3 kinds, then one shared
