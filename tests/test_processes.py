"""`deskbridge serve` (gunicorn) and `deskbridge worker` as real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from integrations.cli import cli
from tests.test_readme_commands import free_port

pytestmark = pytest.mark.slow
DESKBRIDGE = [sys.executable, "-m", "integrations"]


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_refuses_to_start_on_an_old_schema(
    tmp_path: Path, make_config: Callable[..., Path], command: str,
) -> None:
    config = make_config(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    result = CliRunner().invoke(cli, [command, "--config", str(config)])
    assert result.exit_code == 1
    assert "run `deskbridge db upgrade`" in result.stderr


def test_serve_runs_gunicorn_and_stops_on_sigterm(
    tmp_path: Path, make_config: Callable[..., Path],
) -> None:
    config = make_config(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    subprocess.run([*DESKBRIDGE, "db", "upgrade", "--config", str(config)], check=True,
                   capture_output=True)
    port = free_port()
    proc = subprocess.Popen([*DESKBRIDGE, "serve", "--config", str(config), "--port", str(port),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    assert r.status == 200 and json.loads(r.read())["status"] == "ready"
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-2000:]
    assert "Booting worker" in out and "Shutting down: Master" in out
