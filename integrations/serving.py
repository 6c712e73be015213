"""`deskbridge serve`: the web tier under gunicorn, one app (and runtime) per worker process."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


class GunicornApp(BaseApplication):  # type: ignore[misc]
    """Builds the Flask app inside each gunicorn worker, after the fork (no shared sockets)."""

    def __init__(self, config_path: str | None, options: dict[str, Any]) -> None:
        self.config_path = config_path
        # gthread: while one request waits on the store's fsync, another does its CPU work.
        self.options = {"worker_class": "gthread", "threads": 4, "graceful_timeout": 20,
                        "timeout": 30, "accesslog": None, **options}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        from integrations.cli import load
        from webhook_server import create_app

        return create_app(load(self.config_path))
