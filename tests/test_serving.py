"""`deskbridge serve`'s gunicorn application, built as a worker builds it."""

from __future__ import annotations

import gc
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from integrations.serving import BodyFirst, GunicornApp


def test_a_worker_builds_the_app_and_freezes_what_start_up_made(
    tmp_path: Path, make_config: Callable[..., Path],
) -> None:
    config = make_config(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    gc.unfreeze()
    try:
        app = GunicornApp(str(config), {"bind": "127.0.0.1:0"}).load()
        assert isinstance(app, Flask) and "x.webhook" in app.view_functions
        assert gc.get_freeze_count() > 10_000  # later full collections skip all of these
    finally:
        gc.unfreeze()


class _Stalled(io.RawIOBase):
    """A request body whose sender stopped: the read times out (as SO_RCVTIMEO makes it)."""

    def read(self, size: int = -1) -> bytes:
        raise TimeoutError("timed out")


def _call(app: BodyFirst, length: str, body: io.IOBase) -> tuple[str, bytes]:
    answer: list[str] = []
    out = b"".join(app({"CONTENT_LENGTH": length, "wsgi.input": body},
                       lambda status, headers: answer.append(status)))
    return answer[0], out


def _echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [])
    return [environ["wsgi.input"].read()]


def test_a_sender_that_stops_mid_body_gets_a_408_and_the_app_never_runs() -> None:
    status, out = _call(BodyFirst(_echo, limit=100), "50", _Stalled())
    assert status == "408 Request Timeout" and b"request_timeout" in out


def test_a_whole_body_reaches_the_app_and_an_oversized_one_is_left_to_it() -> None:
    assert _call(BodyFirst(_echo, limit=100), "5", io.BytesIO(b"hello")) == ("200 OK", b"hello")

    def refuse(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("413 Request Entity Too Large", [])  # as Flask does, unread
        return [b""]

    # Over the limit: not read here (that read would stall), so the app answers 413 at once.
    assert _call(BodyFirst(refuse, limit=3), "5", _Stalled())[0].startswith("413")
