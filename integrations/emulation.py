"""What every provider emulator shares: its request handler, and serving until stopped."""

from __future__ import annotations

import itertools
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import requests
from flask import request
from werkzeug.serving import WSGIRequestHandler, make_server


class EmulatorRequestHandler(WSGIRequestHandler):
    """werkzeug's handler, minus its own `Server` header and with log lines marked as ours."""

    label: ClassVar[str] = "emulator"  # each emulator names itself

    def send_response(self, code: int, message: str | None = None) -> None:
        """Send the status line and Date; the app's `server` header names the emulator."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def log(self, type: str, message: str, *args: Any) -> None:
        """werkzeug's request log line, prefixed so nobody mistakes it for the provider."""
        super().log(type, f"{self.label}: " + message, *args)


class Server(Protocol):
    def serve_forever(self, poll_interval: float = 0.5) -> None: ...

    def shutdown(self) -> None: ...

    def server_close(self) -> None: ...


LOOPBACK = "127.0.0.1"
JSON = "application/json; charset=utf-8"
Clock = Callable[[], float]  # epoch seconds


def loopback_session() -> requests.Session:
    """A requests session for the emulators' own calls; loopback never goes through a proxy."""
    session = requests.Session()
    session.trust_env = False
    return session


def control_body() -> dict[str, Any]:
    """The JSON object posted to an emulator's /_emulator/ control route ({} if none)."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def serve_app(app: Any, *, port: int, host: str, handler: type[EmulatorRequestHandler],
              banner: Callable[[str], str]) -> None:
    """Serve an emulator on loopback until stopped. The first line of standard output is its
    base URL (flushed at once); `banner(base_url)` goes to standard error.

    Raises ValueError when asked to listen anywhere but 127.0.0.1.
    """
    if host != LOOPBACK:
        raise ValueError(f"the {handler.label} only listens on {LOOPBACK}, not {host!r}")
    server = make_server(host, port, app, threaded=True, request_handler=handler)
    base_url = f"http://{LOOPBACK}:{server.server_port}"
    print(base_url, flush=True)
    print(banner(base_url), file=sys.stderr, flush=True)
    serve_until_stopped(server)


def serve_until_stopped(server: Server) -> None:
    """Serve until SIGINT or SIGTERM (or Ctrl-C), then close the socket."""
    _stop_on_signals(server.shutdown)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _stop_on_signals(shutdown: Callable[[], None]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    # shutdown() waits for serve_forever() to return, so it must run off the serving thread.
    stopping = itertools.count()

    def stop(signum: int, frame: object) -> None:
        if next(stopping) == 0:
            threading.Thread(target=shutdown, daemon=True).start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
