"""The `deskbridge` command.

`run` is web and workers in one process on the embedded defaults; `serve` (gunicorn) and
`worker` are the two halves for running at scale. The config file is `--config`, else
`$DESKBRIDGE_CONFIG`, else `deskbridge.toml` in the working directory (DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import IO, Any, NoReturn, TypeVar

import click

from integrations.config import Settings, load_settings
from integrations.errors import ConfigError, DeskbridgeError
from integrations.logs import configure_logging
from integrations.runtime import Runtime, run_worker
from integrations.store import ItemStatus

log = logging.getLogger("deskbridge.cli")
F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), default=None,
        help="Config file (default: $DESKBRIDGE_CONFIG, else ./deskbridge.toml).",
    )(func)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"deskbridge: {message}", err=True)
    sys.exit(code)


def load(config_path: str | None, *, quiet_logs: bool = False) -> Settings:
    """Load and validate the settings, and set up logging from them; exits 2 if invalid."""
    try:
        settings = load_settings(config_path)
    except ConfigError as err:
        click.echo("deskbridge: the configuration is not valid:", err=True)
        for problem in err.problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(2)
    level = "WARNING" if quiet_logs else settings.log.level
    configure_logging(level, settings.log.format, settings.secret_values())
    return settings


def build_runtime(settings: Settings) -> Runtime:
    try:
        return Runtime(settings)
    except DeskbridgeError as err:
        _fail(str(err))


@contextmanager
def opened(config_path: str | None) -> Iterator[Runtime]:
    """A runtime for a one-shot command (quiet logs); a DeskbridgeError exits 1, cleanly."""
    runtime = build_runtime(load(config_path, quiet_logs=True))
    try:
        yield runtime
    except DeskbridgeError as err:
        _fail(str(err))
    finally:
        runtime.close()


@click.group()
@click.version_option(package_name="deskbridge")
def cli() -> None:
    """deskbridge: answer customers on X from the helpdesk you already run."""


# ---------------------------------------------------------------- processes


@cli.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (default: server.host).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: server.port).")
def run(config_path: str | None, host: str | None, port: int | None) -> None:
    """Web server and workers in one process, on the embedded defaults."""
    import waitress

    from integrations.serving import WAITRESS_OPTIONS, freeze_startup_objects
    from webhook_server import create_app

    settings = load(config_path)
    runtime = build_runtime(settings)
    runtime.upgrade_schema()
    app = create_app(settings, runtime=runtime)
    freeze_startup_objects()
    stop = threading.Event()
    consumer = runtime.consumer(embedded=True)
    consumer.start()
    runtime.start_sweeper(stop)
    runtime.start_intake(stop)
    runtime.start_pollers(stop)
    server: Any = waitress.create_server(
        app, host=host or settings.server.host, port=port if port is not None else
        settings.server.port, ident="deskbridge", **WAITRESS_OPTIONS)
    url = f"http://{server.effective_host}:{server.effective_port}"
    log.info("deskbridge running", extra={"url": url, "pid": os.getpid(),
                                           "workers": settings.queue.workers})
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run()  # returns after SIGINT/SIGTERM, once in-flight requests are answered
    finally:
        stop.set()
        consumer.stop(graceful=True)
        runtime.close()
        log.info("deskbridge stopped cleanly", extra={"pid": os.getpid()})


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@cli.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (default: server.host).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: server.port).")
@click.option("--workers", type=int, default=2, show_default=True, help="gunicorn web workers.")
@click.option("--threads", type=int, default=None,
              help="Threads per worker (default: integrations.serving.THREADS, 32).")
def serve(config_path: str | None, host: str | None, port: int | None, workers: int,
          threads: int | None) -> None:
    """The web tier alone, under gunicorn (run `deskbridge worker` beside it)."""
    from integrations.serving import GunicornApp

    with opened(config_path) as runtime:
        runtime.require_current_schema()
        settings = runtime.settings
    bind = f"{host or settings.server.host}:{port if port is not None else settings.server.port}"
    options: dict[str, Any] = {"bind": bind, "workers": workers}
    if threads is not None:
        options["threads"] = threads
    GunicornApp(config_path, options).run()


@cli.command()
@config_option
@click.option("--workers", type=int, default=None, help="Worker threads (default: queue.workers).")
def worker(config_path: str | None, workers: int | None) -> None:
    """Process queued items; run as many of these as you like, on any machine."""
    from integrations.serving import freeze_startup_objects

    settings = load(config_path)
    runtime = build_runtime(settings)
    try:
        runtime.require_current_schema()
    except DeskbridgeError as err:
        _fail(str(err))
    freeze_startup_objects()
    run_worker(runtime, workers)


# ---------------------------------------------------------------- operations


@cli.command()
@config_option
@click.option("--status", type=click.Choice(ItemStatus.ALL), default=None,
              help="Only items with this status.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def events(config_path: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List inbox items, newest first, with their status and last error."""
    with opened(config_path) as runtime:
        items = runtime.store.list_items(status, limit)
        counts = runtime.store.count_items()
    for item in items:
        row = {
            "id": item.id, "key": "/".join(item.natural_key), "type": item.event_type,
            "status": item.status, "attempts": item.attempts,
            "received_at": item.received_at.isoformat(),
            "next_attempt_at": item.next_attempt_at.isoformat(),
            "outcome": item.outcome, "last_error": item.last_error,
        }
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False))
        else:
            detail = item.last_error if item.status != ItemStatus.DONE else item.outcome
            click.echo(f"{item.id:>7}  {item.status:<10} {item.attempts:>2}x  {row['key']}  "
                       f"{detail or ''}")
    if not as_json:
        click.echo("  ".join(f"{k}: {v}" for k, v in counts.items()), err=True)


@cli.command()
@config_option
@click.argument("item_ids", nargs=-1, type=int)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
def replay(config_path: str | None, item_ids: Sequence[int], replay_all: bool) -> None:
    """Send dead letters round again (by id, or --all)."""
    if not item_ids and not replay_all:
        _fail("name the item ids to replay, or pass --all", 2)
    with opened(config_path) as runtime:
        replayed = runtime.pipeline.replay(None if replay_all else list(item_ids))
    missing = sorted(set(item_ids) - set(replayed))
    click.echo(f"replayed {len(replayed)} item(s)" + (f": {', '.join(map(str, replayed))}"
                                                      if replayed else ""))
    if missing:
        _fail(f"not dead letters (or unknown): {', '.join(map(str, missing))}")


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@config_option
def config_check(config_path: str | None) -> None:
    """Validate a config file; prints it with secrets redacted, or every problem (exit 2)."""
    settings = load(config_path, quiet_logs=True)
    click.echo(f"{settings.source or 'configuration'}: valid")
    click.echo(json.dumps(settings.redacted(), indent=2, ensure_ascii=False))


@cli.group()
def db() -> None:
    """Manage the store's schema."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path: str | None) -> None:
    """Migrate the store to the newest schema."""
    with opened(config_path) as runtime:
        revision = runtime.upgrade_schema()
    click.echo(f"store schema at revision {revision}")


@cli.command()
@click.option("--helpdesk", type=click.Choice(["zendesk", "salesforce"]), required=True)
def refs(helpdesk: str) -> None:
    """Ticket references in each line of standard input, one JSON object per line."""
    from integrations.references import ReferenceRules, extract_references

    rules = ReferenceRules(helpdesk=helpdesk)
    out = sys.stdout
    for raw in sys.stdin.buffer:  # split on "\n" only: other line breaks are message text
        line = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
        found = [{"number": r.number, "start": r.start, "end": r.end}
                 for r in extract_references(line, rules)]
        out.write(json.dumps({"refs": found}) + "\n")
        out.flush()


@cli.command()
@config_option
@click.option("--mapping", "mapping_name", required=True, help="The mapping whose rules apply.")
@click.argument("text")
@click.option("--reply-to", default=None, help="The id of the message this one answers.")
@click.option("--dm", is_flag=True, help="As a direct message.")
@click.option("--from", "sender", default="customer", show_default=True,
              help="The sender's handle (or handle:user_id).")
def link(config_path: str | None, mapping_name: str, text: str, reply_to: str | None,
         dm: bool, sender: str) -> None:
    """Dry run: where would this message go, and why? Writes nothing."""
    from integrations.dryrun import dry_run_link

    with opened(config_path) as runtime:
        runtime.require_current_schema()
        for line in dry_run_link(runtime, mapping_name, text, reply_to=reply_to, dm=dm,
                                 sender=sender):
            click.echo(line)


@cli.command()
@click.argument("provider", type=click.Choice(["x"]))
@click.argument("payload", type=click.File("rb"))
@click.option("--account", default="", help="The subscribed account's id, for API responses "
              "(webhook payloads name it themselves).")
def inspect(provider: str, payload: IO[bytes], account: str) -> None:
    """Print the normalised messages of an X webhook or API payload, one JSON line each."""
    from integrations.twitter.inspect import inspect_payload

    try:
        lines = inspect_payload(payload.read(), account)
    except DeskbridgeError as err:
        _fail(str(err), 2)
    for line in lines:
        click.echo(json.dumps(line, ensure_ascii=False))


@cli.command()
@config_option
@click.option("--channel", "channel_name", default=None, help="Only this channel (default: all "
              "X channels, whether or not `poll` is set).")
def poll(config_path: str | None, channel_name: str | None) -> None:
    """Poll X once for new mentions and DMs, and accept them."""
    from integrations.twitter.client import make_client
    from integrations.twitter.polling import poll_channel

    with opened(config_path) as runtime:
        channels = {n: c for n, c in runtime.settings.channels.items()
                    if c.type == "x" and channel_name in (None, n)}
        if not channels:
            _fail(f"no X channel {channel_name or ''} is configured".replace("  ", " "), 2)
        for name, channel in channels.items():
            for result in poll_channel(make_client(channel), channel, runtime.pipeline):
                click.echo(json.dumps({"channel": name, **dataclasses.asdict(result)}))


@cli.command()
@click.argument("provider", type=click.Choice(["x", "zendesk"]))
@click.option("--port", type=int, default=0, show_default=True, help="0 picks a free port.")
def emulator(provider: str, port: int) -> None:
    """Serve a provider's API emulator on 127.0.0.1 (prints its base URL first)."""
    if provider == "zendesk":
        from integrations.zendesk.emulator import serve as serve_zendesk

        serve_zendesk(port=port)
    else:
        from integrations.twitter.emulator import serve as serve_x

        serve_x(port=port)


@cli.group("x")
def x_group() -> None:
    """X (Twitter): the webhook that delivers an account's activity to deskbridge."""


@x_group.group("webhook")
def x_webhook() -> None:
    """Register, check, list and delete the app's webhooks; subscribe the account."""


def _x_webhooks(config_path: str | None, channel_name: str | None) -> Any:
    from integrations.twitter.registration import XWebhooks

    settings = load(config_path, quiet_logs=True)
    channels = {n: c for n, c in settings.channels.items() if c.type == "x"}
    if channel_name is not None:
        channels = {n: c for n, c in channels.items() if n == channel_name}
    if len(channels) != 1:
        _fail("name the X channel with --channel" if channels else
              f"no X channel {channel_name or ''} is configured".replace("  ", " "), 2)
    return XWebhooks(next(iter(channels.values())))


def channel_option(func: F) -> F:
    return click.option("--channel", "channel_name", default=None,
                        help="The X channel (needed when several are configured).")(func)


def _x_call(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except DeskbridgeError as err:
        _fail(str(err))


@x_webhook.command("register")
@config_option
@channel_option
@click.argument("url")
def x_webhook_register(config_path: str | None, channel_name: str | None, url: str) -> None:
    """Register URL (deskbridge's public https://…/webhooks/x) with X."""
    hooks = _x_webhooks(config_path, channel_name)
    click.echo(json.dumps(_x_call(lambda: hooks.register(url))))


@x_webhook.command("list")
@config_option
@channel_option
def x_webhook_list(config_path: str | None, channel_name: str | None) -> None:
    """The app's webhooks, one JSON line each."""
    hooks = _x_webhooks(config_path, channel_name)
    for hook in _x_call(hooks.list):
        click.echo(json.dumps(hook))


@x_webhook.command("delete")
@config_option
@channel_option
@click.argument("webhook_id")
def x_webhook_delete(config_path: str | None, channel_name: str | None, webhook_id: str) -> None:
    """Delete one of the app's webhooks."""
    hooks = _x_webhooks(config_path, channel_name)
    click.echo("deleted" if _x_call(lambda: hooks.delete(webhook_id)) else "not deleted")


@x_webhook.command("crc")
@config_option
@channel_option
@click.argument("webhook_id")
def x_webhook_crc(config_path: str | None, channel_name: str | None, webhook_id: str) -> None:
    """Ask X to run its CRC check again (re-enables a webhook that failed one)."""
    hooks = _x_webhooks(config_path, channel_name)
    valid = _x_call(lambda: hooks.validate(webhook_id))
    click.echo("valid" if valid else "invalid")
    if not valid:
        sys.exit(1)


@x_webhook.command("subscribe")
@config_option
@channel_option
@click.argument("webhook_id")
def x_webhook_subscribe(config_path: str | None, channel_name: str | None,
                        webhook_id: str) -> None:
    """Subscribe the channel's account to the webhook, so its activity arrives."""
    hooks = _x_webhooks(config_path, channel_name)
    click.echo("subscribed" if _x_call(lambda: hooks.subscribe(webhook_id)) else "not subscribed")


@cli.group("zendesk")
def zendesk_group() -> None:
    """Zendesk: the webhook and triggers that send agents' answers to deskbridge."""


@zendesk_group.command("setup")
@config_option
@click.option("--helpdesk", "helpdesk_name", default=None,
              help="The Zendesk helpdesk (needed when several are configured).")
@click.option("--url", "public_url", default=None,
              help="deskbridge's public https address (default: server.public_url).")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
def zendesk_setup(config_path: str | None, helpdesk_name: str | None, public_url: str | None,
                  dry_run: bool) -> None:
    """Create or update the Zendesk webhook and triggers deskbridge needs (idempotent)."""
    from integrations.zendesk.adapter import ZendeskHelpdesk
    from integrations.zendesk.setup import ZendeskSetup

    settings = load(config_path, quiet_logs=True)
    zendesks = {n: h for n, h in settings.helpdesks.items() if h.type == "zendesk"
                and helpdesk_name in (None, n)}
    url = public_url or settings.server.public_url
    if len(zendesks) != 1:
        _fail("name the Zendesk helpdesk with --helpdesk" if zendesks else
              "no such Zendesk helpdesk is configured", 2)
    if not url:
        _fail("give deskbridge's public address with --url (or server.public_url)", 2)
    name, helpdesk = next(iter(zendesks.items()))
    setup = ZendeskSetup(ZendeskHelpdesk(name, helpdesk), url, dry_run=dry_run)
    changes = _x_call(setup.run)
    for change in changes:
        click.echo(("would " if dry_run else "") + str(change))


def main() -> None:
    cli(prog_name="deskbridge")
