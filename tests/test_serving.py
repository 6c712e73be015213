"""`deskbridge serve`'s gunicorn application, built as a worker builds it."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from integrations.serving import GunicornApp


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
