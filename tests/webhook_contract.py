"""The security test case every provider's webhook endpoint must pass (subclass it).

Good, bad, missing and (where the provider signs a timestamp) stale signatures; fail closed
without a secret; malformed JSON; an oversized body; unknown event types ignored; only POST
delivers (HEAD, PUT, ... store nothing). A refused request stores nothing, and is logged with
its reason and the sender's address, never a secret or a signature.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import pytest
from flask.testing import FlaskClient

from integrations.logs import JsonFormatter, TextFormatter
from integrations.runtime import Runtime

SENDER = "203.0.113.9"  # TEST-NET-3: the address the refused requests come from


class WebhookSecurityContract:
    path: ClassVar[str]
    signs_timestamp: ClassVar[bool] = False

    # ---- what a provider's subclass supplies
    def valid_body(self) -> bytes:
        raise NotImplementedError

    def unknown_event_body(self) -> bytes:
        raise NotImplementedError

    def headers(self, body: bytes, *, secret: str | None = None,
                age_seconds: float = 0) -> dict[str, str]:
        """Headers signing `body` as the provider does (with the configured secret by default)."""
        raise NotImplementedError

    def unsigned_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    # ---- the shared case
    @staticmethod
    def stored(runtime: Runtime) -> int:
        runtime.intake.flush()  # X deliveries reach the store from the intake journal
        return sum(runtime.store.count_items().values())

    def test_good_signature_is_accepted_and_stored(self, client: FlaskClient,
                                                   runtime: Runtime) -> None:
        body = self.valid_body()
        response = client.post(self.path, data=body, headers=self.headers(body))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert self.stored(runtime) >= 1

    def test_bad_signature_is_refused_before_parsing(self, client: FlaskClient,
                                                     runtime: Runtime) -> None:
        body = self.valid_body()
        response = client.post(self.path, data=body, headers=self.headers(body, secret="wrong"))
        assert response.status_code == 401 and response.get_json()["error"] == "unverified"
        tampered = client.post(self.path, data=body + b" ", headers=self.headers(body))
        assert tampered.status_code == 401
        assert self.stored(runtime) == 0

    def test_missing_signature_is_refused(self, client: FlaskClient, runtime: Runtime) -> None:
        response = client.post(self.path, data=self.valid_body(), headers=self.unsigned_headers())
        assert response.status_code == 401 and "missing" in response.get_json()["reason"]
        assert self.stored(runtime) == 0

    def test_stale_signature_is_refused(self, client: FlaskClient, runtime: Runtime) -> None:
        if not self.signs_timestamp:
            pytest.skip("this provider signs no time; the inbox's dedupe absorbs replays")
        body = self.valid_body()
        response = client.post(self.path, data=body, headers=self.headers(body, age_seconds=3600))
        assert response.status_code == 401 and self.stored(runtime) == 0

    def test_malformed_json_is_400_with_a_reason(self, client: FlaskClient,
                                                 runtime: Runtime) -> None:
        body = b'{"for_user_id": "1000", "tweet_create_events": [ '
        response = client.post(self.path, data=body, headers=self.headers(body))
        assert response.status_code == 400
        assert "JSON" in response.get_json()["reason"] and self.stored(runtime) == 0

    def test_oversized_body_is_413(self, client: FlaskClient, runtime: Runtime) -> None:
        limit = runtime.settings.server.max_body_bytes
        body = b"{" + b" " * limit + b"}"
        response = client.post(self.path, data=body, headers=self.headers(body))
        assert response.status_code == 413 and self.stored(runtime) == 0

    def test_unknown_event_types_are_ignored(self, client: FlaskClient, runtime: Runtime) -> None:
        body = self.unknown_event_body()
        response = client.post(self.path, data=body, headers=self.headers(body))
        assert response.status_code == 200 and self.stored(runtime) == 0

    # ---- methods: only a POST delivers
    def test_head_with_a_signed_body_stores_nothing(self, client: FlaskClient,
                                                    runtime: Runtime) -> None:
        body = self.valid_body()
        response = client.open(self.path, method="HEAD", data=body, headers=self.headers(body))
        assert response.status_code >= 400 and response.get_data() == b""
        assert self.stored(runtime) == 0

    def test_other_methods_are_405_with_allow(self, client: FlaskClient,
                                              runtime: Runtime) -> None:
        body = self.valid_body()
        for method in ("PUT", "PATCH", "DELETE"):
            answer = client.open(self.path, method=method, data=body, headers=self.headers(body))
            assert answer.status_code == 405 and "POST" in answer.headers["Allow"], method
            assert answer.get_json()["error"] == "method_not_allowed"
        assert self.stored(runtime) == 0

    # ---- refusals are visible in the log
    @staticmethod
    def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "deskbridge.web"
                and r.levelno == logging.WARNING and r.getMessage() == "request refused"]

    def test_a_wrong_secret_is_logged_once_without_secret_or_signature(
            self, client: FlaskClient, runtime: Runtime, caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, logger="deskbridge.web")
        body = self.valid_body()
        headers = self.headers(body, secret="a-wrong-secret-of-the-admin")
        response = client.post(self.path, data=body, headers=headers,
                               environ_base={"REMOTE_ADDR": SENDER})
        assert response.status_code == 401
        (line,) = self.refusal_lines(caplog)
        assert line.reason == response.get_json()["reason"]  # type: ignore[attr-defined]
        assert line.remote_addr == SENDER and line.status == 401  # type: ignore[attr-defined]
        written = TextFormatter().format(line) + JsonFormatter().format(line)
        assert SENDER in written and str(line.reason) in written  # type: ignore[attr-defined]
        never = [*runtime.settings.secret_values(), "a-wrong-secret-of-the-admin",
                 *(v for k, v in headers.items() if "signature" in k.lower())]
        assert [s for s in never if s in written] == []

    def test_every_kind_of_refusal_is_logged_with_its_status(
            self, client: FlaskClient, runtime: Runtime, caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, logger="deskbridge.web")
        body = self.valid_body()
        malformed = b'{"for_user_id": "1000", "tweet_create_events": [ '
        oversized = b"{" + b" " * runtime.settings.server.max_body_bytes + b"}"
        answers = [
            client.post(self.path, data=body, headers=self.unsigned_headers()),
            client.post(self.path, data=malformed, headers=self.headers(malformed)),
            client.post(self.path, data=oversized, headers=self.headers(oversized)),
            client.put(self.path, data=body, headers=self.headers(body)),
        ]
        assert [a.status_code for a in answers] == [401, 400, 413, 405]
        logged = [(r.status, r.reason) for r in self.refusal_lines(caplog)]  # type: ignore[attr-defined]
        assert logged == [(a.status_code, a.get_json()["reason"]) for a in answers]
        assert self.stored(runtime) == 0

    def test_an_unknown_account_is_refused_and_logged(
            self, client: FlaskClient, runtime: Runtime, caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, logger="deskbridge.web")
        provider_root = "/".join(self.path.split("/")[:3])  # /webhooks/<provider>
        body = self.valid_body()
        response = client.post(f"{provider_root}/no-such-account", data=body,
                               headers=self.headers(body), environ_base={"REMOTE_ADDR": SENDER})
        assert 400 <= response.status_code < 500 and self.stored(runtime) == 0
        (line,) = self.refusal_lines(caplog)
        assert line.reason == response.get_json()["reason"]  # type: ignore[attr-defined]
        assert line.path == f"{provider_root}/no-such-account"  # type: ignore[attr-defined]
        assert line.remote_addr == SENDER  # type: ignore[attr-defined]
