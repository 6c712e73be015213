"""Fixtures for X tests: the X emulator served on a real loopback port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from werkzeug.serving import make_server

from integrations.twitter.emulator import EmulatorRequestHandler, XEmulator, create_app
from integrations.twitter.settings import XChannelSettings


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """`app` on 127.0.0.1 at a free port, for the duration of the block."""
    server = make_server("127.0.0.1", 0, app, threaded=True,
                         request_handler=EmulatorRequestHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def x_emulator() -> XEmulator:
    return XEmulator()


@pytest.fixture
def x_url(x_emulator: XEmulator) -> Iterator[str]:
    with served(create_app(x_emulator)) as url:
        yield url


@pytest.fixture
def x_settings(x_emulator: XEmulator, x_url: str) -> XChannelSettings:
    return x_emulator.channel_settings(x_url)
