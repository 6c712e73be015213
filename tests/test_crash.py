"""A worker killed with SIGKILL mid-write, then restarted, writes exactly once in effect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from integrations.config import load_settings
from integrations.runtime import Runtime
from integrations.store import DeliveryStatus, ItemStatus
from tests.doubles import RecordingHelpdesk
from tests.factories import message

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def start_worker(config: Path, record: Path, *hang: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.worker_with_double", str(config), str(record), *hang],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("hang", ["before", "after"])
def test_killed_worker_restarted_writes_once(
    backend: tuple[str, str], make_config: Callable[..., Path], tmp_path: Path, hang: str,
) -> None:
    config = make_config(*backend, lease_seconds=1.0, sweep_interval_seconds=1,
                         sweep_grace_seconds=1.0)
    runtime = Runtime(load_settings(config))
    runtime.upgrade_schema()
    (item_id,) = runtime.pipeline.accept([message("1")]).new_ids
    record = tmp_path / "writes.jsonl"
    double = RecordingHelpdesk("hd", record)

    first = start_worker(config, record, hang)
    try:
        wait_for(double.hang_marker.exists, 30, f"the worker to hang {hang} its write")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    killed = runtime.store.get_item(item_id)
    assert killed is not None and killed.status == ItemStatus.PROCESSING
    (intent,) = runtime.store.deliveries_for_item(item_id)
    assert intent.status == DeliveryStatus.INTENT  # the outcome was unknown when it died
    assert len(double.writes()) == (1 if hang == "after" else 0)

    restart_and_finish(config, record, runtime, item_id)
    assert [w["op"] for w in double.writes()] == ["create_ticket"]
    (delivery,) = runtime.store.deliveries_for_item(item_id)
    assert delivery.status == DeliveryStatus.DONE
    runtime.close()


def test_a_worker_killed_writing_the_safe_form_writes_it_once_after_restart(
    make_config: Callable[..., Path], tmp_path: Path,
) -> None:
    """The helpdesk refused the message as it was; the worker wrote it in a safe form and
    was killed before it could record that. The next worker finds that write: one ticket."""
    config = make_config(f"sqlite:///{tmp_path}/store.db", f"sqlite:///{tmp_path}/queue.db",
                         lease_seconds=1.0, sweep_interval_seconds=1, sweep_grace_seconds=1.0)
    runtime = Runtime(load_settings(config))
    runtime.upgrade_schema()
    (item_id,) = runtime.pipeline.accept([message("1")]).new_ids
    record = tmp_path / "writes.jsonl"
    double = RecordingHelpdesk("hd", record)

    first = start_worker(config, record, "after", "refuse")
    try:
        wait_for(double.hang_marker.exists, 30, "the worker to hang after its safe-form write")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    refused, intent = runtime.store.deliveries_for_item(item_id)
    assert (refused.status, intent.status) == (DeliveryStatus.FAILED, DeliveryStatus.INTENT)

    restart_and_finish(config, record, runtime, item_id)
    (written,) = double.writes()
    assert "kept in deskbridge's store" in written["reason"]
    item = runtime.store.get_item(item_id)
    assert item is not None and (item.outcome or "").endswith("; written in a safe form")
    runtime.close()


def restart_and_finish(config: Path, record: Path, runtime: Runtime, item_id: int) -> None:
    """Start a worker again and wait until it has finished the item; it stops cleanly."""
    second = start_worker(config, record)
    try:
        wait_for(lambda: getattr(runtime.store.get_item(item_id), "status", None)
                 == ItemStatus.DONE, 30, "the restarted worker to finish the item")
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err.decode()[-2000:]
