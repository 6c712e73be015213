"""The web tier: health, readiness, body limit, JSON errors, refusals logged and throttled."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from integrations.config import Settings
from integrations.logs import LogThrottle
from integrations.runtime import Runtime
from tests.conftest import EpochClock
from webhook_server import create_app


def app_for(settings: Settings, *, upgrade: bool = True,
            refusals: LogThrottle | None = None) -> Flask:
    runtime = Runtime(settings)
    if upgrade:
        runtime.upgrade_schema()
    return create_app(settings, runtime=runtime, refusals=refusals)


def test_healthz_and_readyz(backend: tuple[str, str], make_settings: Callable[..., Settings]) -> None:
    client = app_for(make_settings(*backend)).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    body = ready.get_json()
    assert ready.status_code == 200 and body["status"] == "ready"
    assert body["store"]["ok"] and body["queue"]["ok"]
    assert body["store"]["backend"] in ("sqlite", "postgresql")


def test_readyz_is_503_with_details_and_no_secret(
    tmp_path: Path, make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path}/store.db",
                             "redis://:queue-password-42@127.0.0.1:1/0")
    response = app_for(settings, upgrade=False).test_client().get("/readyz")
    body = response.get_json()
    assert response.status_code == 503 and body["status"] == "not_ready"
    assert not body["store"]["ok"] and "deskbridge db upgrade" in body["store"]["error"]
    assert not body["queue"]["ok"] and "Connection" in body["queue"]["error"]
    assert "queue-password-42" not in response.get_data(as_text=True)


def test_body_over_the_limit_is_413_with_a_reason(
    tmp_path: Path, make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    client = app_for(settings).test_client()
    limit = settings.server.max_body_bytes
    response = client.post("/webhooks/x", data=b"x" * (limit + 1))
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "request_entity_too_large",
        "reason": f"body larger than the limit of {limit} bytes"}


def test_unknown_path_is_json_404(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    response = app_for(settings).test_client().get("/nope")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_a_flood_of_bad_requests_writes_a_bounded_log(
    tmp_path: Path, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="deskbridge.web")
    settings = make_settings(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    clock = EpochClock(now=0.0)
    client = app_for(settings, refusals=LogThrottle(burst=10, interval=60, clock=clock)
                     ).test_client()
    headers = {"X-Twitter-Webhooks-Signature": "sha256=forged"}
    # 2,000 here (the test client costs 0.4 ms a request); test_logs.py floods the
    # throttle itself with 10,000.
    for n in range(2_000):
        clock.now = n * 0.01  # twenty seconds of refusals, within one window
        assert client.post("/webhooks/x", data=b"{}", headers=headers).status_code == 401
    web = [r for r in caplog.records if r.name == "deskbridge.web"]
    assert len(web) == 10
    clock.now = 61.0
    client.post("/webhooks/x", data=b"{}", headers=headers)
    summary, line = [r for r in caplog.records if r.name == "deskbridge.web"][10:]
    assert summary.getMessage() == "1990 more refusals like this were suppressed"
    assert summary.suppressed == 1_990 and summary.route == "/webhooks/x"  # type: ignore[attr-defined]
    assert line.getMessage() == "request refused"


def test_an_unexpected_error_answers_500_without_its_text(
    tmp_path: Path, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    app = app_for(settings)

    def broken() -> str:
        raise RuntimeError("internal detail: password=hunter2 at /srv/deskbridge/store.py")

    app.add_url_rule("/broken", "broken", broken)
    response = app.test_client().get("/broken")
    text = response.get_data(as_text=True)
    assert response.status_code == 500 and response.get_json() == {
        "error": "internal_error", "reason": "unexpected error; it has been logged"}
    assert "hunter2" not in text and "Traceback" not in text and "RuntimeError" not in text
    (logged,) = [r for r in caplog.records if r.getMessage() == "unexpected error"]
    assert logged.exc_info is not None  # the admin gets the traceback, in the log only


@pytest.mark.parametrize(("trusted", "logged"), [(0, "10.0.0.2"), (1, "198.51.100.7")])
def test_a_refusal_logs_the_sender_a_trusted_proxy_names(
    tmp_path: Path, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture,
    trusted: int, logged: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="deskbridge.web")
    settings = make_settings(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    settings = settings.model_copy(update={
        "server": settings.server.model_copy(update={"trusted_proxies": trusted})})
    client = app_for(settings).test_client()
    # nginx (10.0.0.2) appended the address it saw; a sender's own X-Forwarded-For entry
    # (203.0.113.66, first) is never believed.
    response = client.post(
        "/webhooks/x", data=b"{}", environ_base={"REMOTE_ADDR": "10.0.0.2"},
        headers={"X-Twitter-Webhooks-Signature": "sha256=forged",
                 "X-Forwarded-For": "203.0.113.66, 198.51.100.7"})
    assert response.status_code == 401
    (line,) = [r for r in caplog.records if r.getMessage() == "request refused"]
    assert line.remote_addr == logged  # type: ignore[attr-defined]


def test_a_locked_store_answers_readyz_within_its_bound(
    tmp_path: Path, make_settings: Callable[..., Settings],
) -> None:
    """A store locked by another process (here an exclusive SQLite lock) is reported not
    ready at once, not after the store's own 30 s wait for a lock."""
    settings = make_settings(f"sqlite:///{tmp_path}/store.db", f"sqlite:///{tmp_path}/q.db")
    installing = Runtime(settings)
    installing.upgrade_schema()
    installing.close()
    client = app_for(settings, upgrade=False).test_client()
    lock = sqlite3.connect(tmp_path / "store.db", isolation_level=None, timeout=10)
    lock.execute("PRAGMA locking_mode=EXCLUSIVE")
    lock.execute("BEGIN EXCLUSIVE")
    lock.execute("DELETE FROM inbox_items")  # takes the lock now
    try:
        started = time.monotonic()
        response = client.get("/readyz")
        took = time.monotonic() - started
    finally:
        lock.close()
    body = response.get_json()
    assert response.status_code == 503 and not body["store"]["ok"]
    assert "locked" in body["store"]["error"]
    assert took < 5  # the bound is 1 s; 30 s is the wait it replaces
    assert client.get("/readyz").status_code == 200


def test_probes_that_arrive_during_a_check_share_its_answer(
    tmp_path: Path, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path}/store.db", f"sqlite:///{tmp_path}/q.db")
    runtime = Runtime(settings)
    runtime.upgrade_schema()
    checks: list[float] = []
    slow_check = threading.Event()

    def check(timeout: float = 1.0) -> None:
        checks.append(time.monotonic())
        slow_check.wait(0.5)  # a store slow to answer

    monkeypatch.setattr(runtime.store, "check", check)
    answers: list[bool] = []
    probes = [threading.Thread(target=lambda: answers.append(runtime.readiness()[0]))
              for _ in range(8)]
    for probe in probes:
        probe.start()
    for probe in probes:
        probe.join(10)
    assert answers == [True] * 8
    assert len(checks) <= 2  # one check for the first, at most one for those behind it
    runtime.readiness()
    assert len(checks) <= 3  # a probe after they all finished checks afresh
    runtime.close()
