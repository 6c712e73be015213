"""The web tier: health, readiness, body limit, JSON errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Flask

from integrations.config import Settings
from integrations.runtime import Runtime
from webhook_server import create_app


def app_for(settings: Settings, *, upgrade: bool = True) -> Flask:
    runtime = Runtime(settings)
    if upgrade:
        runtime.upgrade_schema()
    return create_app(settings, runtime=runtime)


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
    assert not body["store"]["ok"] and "inbox_items" in body["store"]["error"]
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
