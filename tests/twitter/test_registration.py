"""Registering deskbridge with X end to end: the X emulator runs its CRC check against a
live deskbridge on loopback, the account is subscribed, and a signed event arrives."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from integrations.cli import cli
from integrations.config import load_settings
from integrations.runtime import Runtime
from integrations.twitter.emulator import XEmulator
from integrations.twitter.settings import XChannelSettings
from tests.twitter.conftest import served
from webhook_server import create_app as create_deskbridge

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "x"


def write_config(tmp_path: Path, x: XChannelSettings, consumer_secret: str | None = None) -> Path:
    path = tmp_path / "deskbridge.toml"
    path.write_text(f"""
[store]
url = "sqlite:///{tmp_path}/s.db"
[queue]
url = "sqlite:///{tmp_path}/q.db"
[channels.brand]
type = "x"
account_id = "{x.account_id}"
handle = "{x.handle}"
consumer_key = "{x.consumer_key.get_secret_value()}"
consumer_secret = "{consumer_secret or x.consumer_secret.get_secret_value()}"
access_token = "{x.access_token.get_secret_value() if x.access_token else ''}"
access_token_secret = "{x.access_token_secret.get_secret_value() if x.access_token_secret else ''}"
bearer_token = "{x.bearer_token.get_secret_value() if x.bearer_token else ''}"
api_base_url = "{x.api_base_url}"
""")
    return path


@pytest.fixture
def deskbridge(tmp_path: Path, x_settings: XChannelSettings) -> Iterator[tuple[str, Runtime]]:
    runtime = Runtime(load_settings(write_config(tmp_path, x_settings)))
    runtime.upgrade_schema()
    with served(create_deskbridge(runtime.settings, runtime=runtime)) as url:
        yield url, runtime
    runtime.close()


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["x", "webhook", *args, "--config", str(config)])
    return result.exit_code, result.stdout, result.stderr


def test_register_subscribe_and_receive(
    tmp_path: Path, x_emulator: XEmulator, deskbridge: tuple[str, Runtime],
) -> None:
    url, runtime = deskbridge
    config = tmp_path / "deskbridge.toml"
    code, out, err = run(config, "register", f"{url}/webhooks/x")
    assert code == 0, err
    hook = json.loads(out)
    assert hook["valid"] is True and hook["url"] == f"{url}/webhooks/x"
    assert run(config, "list")[1].strip() == json.dumps(hook)
    assert run(config, "subscribe", hook["id"])[1].strip() == "subscribed"
    assert run(config, "crc", hook["id"])[1].strip() == "valid"

    body = json.loads((PAYLOADS / "account_activity/tweet_create_extended.json").read_bytes())
    body["for_user_id"] = x_emulator.account.id
    (delivery,) = x_emulator.deliver(json.dumps(body).encode())
    assert delivery["status"] == 200
    assert runtime.intake.flush()
    (item,) = runtime.store.list_items()
    assert item.account == x_emulator.account.id
    assert item.event.text.endswith("What do I do next?")  # type: ignore[union-attr]

    assert run(config, "delete", hook["id"])[1].strip() == "deleted"
    assert run(config, "list")[1] == ""


def test_failed_crc_is_explained(
    tmp_path: Path, x_emulator: XEmulator, x_settings: XChannelSettings,
) -> None:
    runtime = Runtime(load_settings(write_config(tmp_path, x_settings, "not-the-apps-secret")))
    runtime.upgrade_schema()
    with served(create_deskbridge(runtime.settings, runtime=runtime)) as url:
        code, _, err = run(tmp_path / "deskbridge.toml", "register", f"{url}/webhooks/x")
    assert code == 1 and "CrcValidationFailed" in err and "consumer_secret" in err
    runtime.close()


def test_webhook_limit_is_explained(
    tmp_path: Path, x_emulator: XEmulator, deskbridge: tuple[str, Runtime],
) -> None:
    url, _ = deskbridge
    config = tmp_path / "deskbridge.toml"
    assert run(config, "register", f"{url}/webhooks/x")[0] == 0
    code, _, err = run(config, "register", f"{url}/webhooks/x/brand")
    assert code == 1 and "WebhookLimitExceeded" in err and "delete one first" in err


def test_emulator_command_prints_its_url_first() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "integrations", "emulator", "x"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{base}/_emulator/calls", timeout=5) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(10)

