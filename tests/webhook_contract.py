"""The security test case every provider's webhook endpoint must pass (subclass it).

Good, bad, missing and (where the provider signs a timestamp) stale signatures; fail closed
without a secret; malformed JSON; an oversized body; unknown event types ignored. A refused
request stores nothing.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
from flask.testing import FlaskClient

from integrations.runtime import Runtime


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
