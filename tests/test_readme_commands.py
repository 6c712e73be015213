"""The README's two commands: `.ci/run` is the test command, and the run command works
from a fresh clone, answers /healthz and /readyz, and exits cleanly on SIGTERM.

The clone reuses this test run's virtualenv (make's install step is marked done with
`make -o`), so the test installs nothing and never leaves this machine; the clone's own code
is imported first through PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_commands() -> dict[str, str]:
    """The commands under the README's "Two commands" heading, by their comment."""
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert block, "README.md has no ```sh block with the two commands"
    commands = {}
    for line in block.group(1).strip().splitlines():
        command, _, comment = line.partition("#")
        commands["test" if "test" in comment else "run"] = command.strip()
    return commands


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [readme_commands()["test"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None,
                    reason="needs git and make")
def test_run_command_from_a_fresh_clone(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout; nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    venv = Path(sys.prefix)
    port = free_port()
    command = readme_commands()["run"].split()
    assert command[:2] == ["make", "run"]
    proc = subprocess.Popen(
        [*command, f"VENV={venv}", "-o", f"{venv}/.deskbridge-installed"], cwd=clone,
        env={**os.environ, "DESKBRIDGE_PORT": str(port), "PYTHONPATH": str(clone),
             "DESKBRIDGE_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pid = wait_for_start(proc)
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})
        status, ready = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and ready["status"] == "ready"
        assert (clone / "var" / "deskbridge.db").exists()  # embedded SQLite, in the clone
        os.kill(pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "deskbridge stopped cleanly" in out


def wait_for_start(proc: subprocess.Popen[str]) -> int:
    """The pid of deskbridge, from its "running" log line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if '"msg": "deskbridge running"' in line:
            return int(json.loads(line)["pid"])
    raise AssertionError("deskbridge did not start:\n" + "".join(seen)[-3000:])
