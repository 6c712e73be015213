"""How the web tier is served: gunicorn for `deskbridge serve`, waitress for `deskbridge run`.

Slow senders. A sender that sends its headers and a byte of body, then nothing, holds what
reads its request. waitress reads every request whole on its event loop before a thread
sees it, so there a slow sender holds only a connection: `run` allows many, and closes one
idle for `READ_TIMEOUT` seconds. gunicorn's gthread worker hands a connection to a thread
as soon as bytes arrive, and the app's read of the body blocks that thread: with 2 workers
of 4 threads, 8 such connections stopped every valid delivery for good. So `serve` gives
each worker `THREADS` threads (a thread pool only grows when all its threads are busy, so
an ordinary load runs as few as before), and a read that waits `READ_TIMEOUT` seconds for
a byte fails, and so does a body still arriving after `BODY_SECONDS` (a trickle of a byte
every few seconds never waits long for one): the sender gets a 408 and its thread is free.
In production, put a buffering proxy (nginx, README "Production") in front: it reads the
whole request before gunicorn sees a byte of it.
"""

from __future__ import annotations

import gc
import io
import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

THREADS = 32  # per gunicorn worker: a slow sender holds one until READ_TIMEOUT
READ_TIMEOUT = 10  # seconds a read from a sender may wait for its next byte
BODY_SECONDS = 15  # seconds a whole request body may take to arrive
# `deskbridge run`: connections waitress keeps open at once (a slow sender holds one; its
# default, 100, is what 99 slow senders reached), checked for idleness every few seconds.
WAITRESS_OPTIONS: dict[str, Any] = {
    "threads": 8, "connection_limit": 1000, "channel_timeout": READ_TIMEOUT,
    "cleanup_interval": 2, "asyncore_use_poll": True,  # select() stops at 1,024 descriptors
}


class GunicornApp(BaseApplication):  # type: ignore[misc]
    """Builds the Flask app inside each gunicorn worker, after the fork (no shared sockets)."""

    def __init__(self, config_path: str | None, options: dict[str, Any]) -> None:
        self.config_path = config_path
        # gthread: while one request waits on the store's fsync, another does its CPU work.
        self.options = {"worker_class": "integrations.serving.Worker", "threads": THREADS,
                        "graceful_timeout": 20, "timeout": 30, "accesslog": None,
                        "worker_exit": _close_runtime, **options}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        from integrations.cli import load
        from integrations.runtime import Runtime
        from webhook_server import create_app

        settings = load(self.config_path)
        # The web tier only makes deliveries durable: `deskbridge worker` moves them into the
        # store (integrations/intake.py), also from a web worker that died.
        app = create_app(settings, runtime=Runtime(settings, moves_intake=False))
        _APPS.append(app)
        freeze_startup_objects()
        app.wsgi_app = BodyFirst(app.wsgi_app, settings.server.max_body_bytes)  # type: ignore[method-assign]
        return app


class Worker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, where a read from a sender waits `READ_TIMEOUT` at most."""

    def handle(self, conn: Any) -> Any:
        # SO_RCVTIMEO, not settimeout: gthread sets the socket blocking again before each
        # request, which clears Python's timeout but not the kernel's.
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("ll", READ_TIMEOUT, 0))
        return super().handle(conn)


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BodyFirst:
    """Reads a request's body before the app runs; a sender that stalls gets a 408.

    A body larger than `limit` is left to the app (it answers 413 before reading it). The
    whole body must arrive within `BODY_SECONDS`: READ_TIMEOUT bounds each wait for a byte,
    but a sender trickling a byte every few seconds never waits that long, and 80 of them
    held every thread of `serve`. Past the deadline a watchdog shuts the connection's read
    side, the read ends short, and the sender gets the 408.
    """

    def __init__(self, app: WSGIApp, limit: int, watchdog: Watchdog | None = None) -> None:
        self.app = app
        self.limit = limit
        self.watchdog = watchdog or Watchdog()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isascii() and length.isdigit() and 0 < int(length) <= self.limit:
            body = self._read(environ, int(length))
            if body is None:
                start_response("408 Request Timeout", [
                    ("Content-Type", "application/json"), ("Connection", "close")])
                return [b'{"error": "request_timeout", "reason": "the body stopped arriving"}\n']
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)

    def _read(self, environ: dict[str, Any], length: int) -> bytes | None:
        sock = environ.get("gunicorn.socket")
        ticket = self.watchdog.watch(sock) if sock is not None else None
        try:
            body: bytes = environ["wsgi.input"].read(length)
        except OSError:  # a wait for a byte timed out, or the sender went away
            return None
        finally:
            if ticket is not None:
                self.watchdog.release(ticket)
        return body if len(body) == length else None  # short: the deadline cut it


class Watchdog:
    """Shuts the read side of sockets whose body read outlived `seconds` (one thread per
    process, started on first use; watching and releasing a socket is a dict update)."""

    def __init__(self, seconds: float = BODY_SECONDS, tick: float = 1.0) -> None:
        self.seconds = seconds
        self.tick = tick
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, socket.socket]] = {}
        self._tickets = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket) -> int:
        """Start the clock on a body read from `sock`; returns the ticket to release."""
        ticket = next(self._tickets)
        with self._lock:
            self._watched[ticket] = (time.monotonic() + self.seconds, sock)
            if self._thread is None or not self._thread.is_alive():  # after a fork too
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="deskbridge-body-watchdog")
                self._thread.start()
        return ticket

    def release(self, ticket: int) -> None:
        """Stop the clock: the read is over."""
        with self._lock:
            self._watched.pop(ticket, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:
                late = [t for t, (deadline, _) in self._watched.items() if deadline <= now]
                socks = [self._watched.pop(t)[1] for t in late]
            for sock in socks:
                try:
                    sock.shutdown(socket.SHUT_RD)  # the blocked read returns what it has
                except OSError:  # already closed by its sender
                    pass


_APPS: list[Flask] = []  # the app this worker process serves (after the fork: one)


def _close_runtime(server: Any, worker: Any) -> None:
    """On a worker's way out: its intake journal is released (for the worker to move)."""
    for app in _APPS:
        app.extensions["deskbridge"].close()


def freeze_startup_objects() -> None:
    """Leave what start-up built (modules, classes, the app) out of every later GC pass.

    Those objects (about 124,000 in a web worker) live as long as the process. Without this, each full collection
    walks them all again, stopping every request thread for tens of milliseconds (it was the
    p99 latency of the ingest benchmark); frozen, a full collection only walks what requests
    made since. https://docs.python.org/3/library/gc.html#gc.freeze
    """
    gc.collect()
    gc.freeze()
