"""Pointing an SDK's HTTP session at another host (X's or Zendesk's API at an emulator on
loopback, or X's newer host), without the SDK knowing."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter


class RebasingAdapter(HTTPAdapter):
    """Sends requests for one URL prefix to another base URL."""

    def __init__(self, prefix: str, base_url: str, **kwargs: Any) -> None:
        self.prefix = prefix.rstrip("/")
        self.base_url = base_url.rstrip("/")
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        asked = request.url or ""
        if not asked.startswith(self.prefix):
            return super().send(request, **kwargs)
        request.url = self.base_url + asked[len(self.prefix):]
        response = super().send(request, **kwargs)
        # Hand the answer back under the URL that was asked for: SDKs read it (zenpy picks
        # its response handler by the host in `response.request.url`).
        request.url = response.url = asked
        return response


def rebase_session(session: requests.Session, base_url: str, prefix: str) -> None:
    """Make `session` send what it is asked to send to `prefix` to `base_url` instead."""
    if base_url.rstrip("/") != prefix:
        session.mount(prefix + "/", RebasingAdapter(prefix, base_url))
