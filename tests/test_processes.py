"""`deskbridge serve` (gunicorn) and `deskbridge worker` as real processes."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.ingest import PAYLOAD, bodies, post, worker_pids, write_config
from integrations.cli import cli
from integrations.config import load_settings
from integrations.store import Store
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


def test_the_worker_stores_what_serve_answered_for_even_from_a_killed_web_worker(
    tmp_path: Path,
) -> None:
    """The deployment of the embedded defaults: `serve` makes X deliveries durable in its
    journals, `deskbridge worker` moves them into the store; a web worker killed outright
    loses nothing, and no journal is left once both have stopped."""
    config = write_config(tmp_path, json.loads(PAYLOAD.read_bytes())["for_user_id"])
    subprocess.run([*DESKBRIDGE, "db", "upgrade", "--config", str(config)], check=True,
                   capture_output=True)
    port = free_port()
    web = subprocess.Popen([*DESKBRIDGE, "serve", "--config", str(config), "--port", str(port),
                            "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker: subprocess.Popen[bytes] | None = None
    store = Store(load_settings(config).store.url)
    deliveries = bodies(40, 0)
    try:
        _wait_until(lambda: _ready(port), "serve did not start")
        assert [post(port, body, sig) for _, body, sig in deliveries[:20]] == [200] * 20
        assert _count(store) == 0  # the web tier moves nothing into the store itself
        for pid in worker_pids(web.pid)[:1]:
            subprocess.run(["kill", "-KILL", str(pid)], check=True)
        _wait_until(lambda: len(worker_pids(web.pid)) == 2, "gunicorn did not replace it")
        _wait_until(lambda: _ready(port), "serve did not answer again")
        assert [post(port, body, sig) for _, body, sig in deliveries[20:]] == [200] * 20
        worker = subprocess.Popen([*DESKBRIDGE, "worker", "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until(lambda: _count(store) == 40, "the worker did not store every delivery")
        web.send_signal(signal.SIGTERM)
        assert web.wait(30) == 0
        journal = tmp_path / "deskbridge.db.intake"
        _wait_until(lambda: not list(journal.glob("*.journal")), "journals were left behind")
    finally:
        for proc in (web, worker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        stored = {item.provider_id for item in store.list_items(limit=100)}
        store.dispose()
    assert stored == {tweet_id for tweet_id, _, _ in deliveries}


@pytest.mark.parametrize(("command", "slow_senders"), [
    (["serve", "--workers", "1"], 12),  # before: 4 threads a worker, all held for good
    (["run"], 120),  # before: waitress took no connection past its 100th
])
def test_slow_senders_do_not_hold_up_a_valid_delivery(
    tmp_path: Path, command: list[str], slow_senders: int,
) -> None:
    """Senders that send their headers and one byte of body, then nothing, do not keep a
    valid signed delivery from being answered at once."""
    config = write_config(tmp_path, json.loads(PAYLOAD.read_bytes())["for_user_id"])
    subprocess.run([*DESKBRIDGE, "db", "upgrade", "--config", str(config)], check=True,
                   capture_output=True)
    port = free_port()
    server = subprocess.Popen([*DESKBRIDGE, *command, "--config", str(config), "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stalled: list[socket.socket] = []
    try:
        _wait_until(lambda: _ready(port), f"{command[0]} did not start")
        for _ in range(slow_senders):
            sender = socket.create_connection(("127.0.0.1", port), timeout=5)
            sender.sendall(b"POST /webhooks/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n{")
            stalled.append(sender)
        time.sleep(0.5)  # the server has taken them all up
        ((_, body, signature),) = bodies(1, 0)
        started = time.monotonic()
        assert _post_within(port, body, signature, seconds=5) == 200
        assert time.monotonic() - started < 2
    finally:
        for sender in stalled:
            sender.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def _post_within(port: int, body: bytes, signature: str, *, seconds: float) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=seconds)
    try:
        conn.request("POST", "/webhooks/x", body=body, headers={
            "Content-Type": "application/json", "X-Twitter-Webhooks-Signature": signature})
        return conn.getresponse().status
    finally:
        conn.close()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def _count(store: Store) -> int:
    return sum(store.count_items().values())


def _wait_until(condition: Callable[[], bool], failure: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)
