"""`deskbridge serve`: the web tier under gunicorn, one app (and runtime) per worker process."""

from __future__ import annotations

import gc
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


class GunicornApp(BaseApplication):  # type: ignore[misc]
    """Builds the Flask app inside each gunicorn worker, after the fork (no shared sockets)."""

    def __init__(self, config_path: str | None, options: dict[str, Any]) -> None:
        self.config_path = config_path
        # gthread: while one request waits on the store's fsync, another does its CPU work.
        self.options = {"worker_class": "gthread", "threads": 4, "graceful_timeout": 20,
                        "timeout": 30, "accesslog": None, "worker_exit": _close_runtime,
                        **options}
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
        return app


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
