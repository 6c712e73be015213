"""`deskbridge serve`'s gunicorn application, built as a worker builds it."""

from __future__ import annotations

import gc
import io
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from integrations.serving import BodyFirst, GunicornApp, Watchdog


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


def test_a_sender_trickling_its_body_is_cut_off_at_the_deadline() -> None:
    """A byte every 0.1 s never waits long for the next one (so READ_TIMEOUT never fires);
    the whole-body deadline ends it with a 408, and a prompt body still gets through."""
    server, sender = socket.socketpair()
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.1):
            try:
                sender.send(b"{")
            except OSError:
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    app = BodyFirst(_echo, limit=10_000, watchdog=Watchdog(seconds=0.5, tick=0.05))
    answer: list[str] = []
    started = time.monotonic()
    try:
        out = b"".join(app({"CONTENT_LENGTH": "5000", "wsgi.input": server.makefile("rb"),
                            "gunicorn.socket": server},
                           lambda status, headers: answer.append(status)))
    finally:
        stop.set()
        thread.join(5)
        server.close()
        sender.close()
    assert answer == ["408 Request Timeout"] and b"request_timeout" in out
    assert time.monotonic() - started < 3
    whole = socket.socketpair()
    whole[1].sendall(b"hello")
    assert _call_with_socket(app, whole[0]) == ("200 OK", b"hello")
    for end in whole:
        end.close()


def _call_with_socket(app: BodyFirst, sock: socket.socket) -> tuple[str, bytes]:
    answer: list[str] = []
    out = b"".join(app({"CONTENT_LENGTH": "5", "wsgi.input": sock.makefile("rb"),
                        "gunicorn.socket": sock}, lambda status, headers: answer.append(status)))
    return answer[0], out
