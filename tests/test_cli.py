"""The `deskbridge` command: config check, db upgrade, events, replay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import responses
from click.testing import CliRunner

from integrations import migrate
from integrations.cli import cli
from integrations.config import load_settings
from integrations.runtime import Runtime
from tests.factories import message

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_config_check_accepts_the_example_and_shows_no_secret() -> None:
    code, out, _ = invoke("config", "check", "--config", str(ROOT / "deskbridge.example.toml"))
    assert code == 0 and "valid" in out
    assert '"consumer_secret": "[redacted]"' in out
    assert "demo-consumer-secret" not in out


def test_config_check_names_the_key_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[helpdesks.zd]\ntype = "zendesk"\nemail = "a@b.example"\ntoken = "t"\n\n'
                   '[[mappings]]\nname = "m"\nchannel = "nope"\nhelpdesk = "zd"\n')
    code, _, err = invoke("config", "check", "--config", str(bad))
    assert code == 2
    assert "helpdesks.zd.subdomain: required setting is missing" in err
    assert "mappings[0].channel: unknown channel 'nope'" in err and "line 8" in err


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = invoke("config", "check", "--config", str(tmp_path / "absent.toml"))
    assert code == 2 and "absent.toml" in err and "not found" in err


def test_db_upgrade_events_and_replay(
    tmp_path: Path, make_config: Callable[..., Path],
) -> None:
    config = make_config(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    code, out, _ = invoke("db", "upgrade", "--config", str(config))
    runtime = Runtime(load_settings(config))
    head = migrate.head_revision()
    assert code == 0 and out == f"store schema at revision {head}\n"

    done_id, dead_id = runtime.pipeline.accept([message("1"), message("2", author_id="7")]).new_ids
    now = datetime.now(UTC)
    for item_id, owner in ((done_id, "w1"), (dead_id, "w2")):
        runtime.store.claim_item(item_id, owner, now, timedelta(seconds=60))
    runtime.store.finish_item(done_id, "w1", now, "comment on hd ticket 1")
    runtime.store.kill_item(dead_id, "w2", now, "ProviderError: zendesk: gone (HTTP 410)")

    code, out, _ = invoke("events", "--config", str(config), "--status", "dead")
    assert code == 0
    assert out.split()[:4] == [str(dead_id), "dead", "1x", "x/1000/2"]
    assert "HTTP 410" in out and "x/1000/1" not in out

    runtime.queue.flush_handoff()
    runtime.huey.flush()  # so that only what replay queues is on the queue
    code, out, err = invoke("replay", "--config", str(config), str(dead_id), str(done_id))
    assert f"replayed 1 item(s): {dead_id}" in out
    assert code == 1 and f"not dead letters (or unknown): {done_id}" in err
    item = runtime.store.get_item(dead_id)
    assert item is not None and item.status == "accepted"
    assert runtime.huey.pending_count() == 1  # back on the queue for the workers
    runtime.close()


def test_replay_needs_ids_or_all() -> None:
    code, _, err = invoke("replay")
    assert code == 2 and "--all" in err


def test_link_dry_run_explains_the_decision_and_writes_nothing(
    tmp_path: Path, make_config: Callable[..., Path],
) -> None:
    config = make_config(f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/q.db")
    assert invoke("db", "upgrade", "--config", str(config))[0] == 0
    zendesk = "https://acme.zendesk.com/api/v2"
    with responses.RequestsMock() as mock:  # Zendesk answers: no such ticket, no such user (by id or handle)
        mock.get(f"{zendesk}/tickets/48213.json", status=404,
                 json={"error": "RecordNotFound", "description": "Not found"})
        mock.get(f"{zendesk}/users/show_many.json", json={"users": [], "count": 0,
                                                           "next_page": None})
        mock.get(f"{zendesk}/users/search.json", json={"users": [], "count": 0,
                                                        "next_page": None})
        code, out, _ = invoke("link", "--config", str(config), "--mapping", "acme",
                              "Mijn zaaknummer is 48213, bestelling 99999", "--dm",
                              "--from", "klant:42")
    assert code == 0, out
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert lines["action"].strip() == "create" and lines["visibility"].strip() == "internal"
    assert lines["references"].strip() == "48213"
    assert "48213, which does not exist" in lines["reason"]
    runtime = Runtime(load_settings(config))
    assert runtime.store.count_items() == dict.fromkeys(runtime.store.count_items(), 0)
    runtime.close()
    code, _, err = invoke("link", "--config", str(config), "--mapping", "nope", "hallo")
    assert code == 1 and "no mapping 'nope' (configured: acme)" in err
