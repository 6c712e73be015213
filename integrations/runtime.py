"""Wiring: the store, queue, router and pipeline that one deskbridge process runs on.

Built from validated settings by `Runtime(settings)`; nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from huey.consumer import Consumer

from integrations.channels import Channel
from integrations.config import MappingSettings, Settings
from integrations.errors import ConfigurationError, DeskbridgeError
from integrations.events import MessageKind
from integrations.helpdesk import Helpdesk
from integrations.intake import Intake, make_intake
from integrations.linking import LinkRules
from integrations.pipeline import Clock, Pipeline, RetryPolicy, Route, utcnow
from integrations.providers import CHANNEL_ADAPTERS, HELPDESK_ADAPTERS
from integrations.queue import TaskQueue, create_huey
from integrations.references import ReferenceRules, compile_pattern
from integrations.store import Store

log = logging.getLogger("deskbridge.runtime")
T = TypeVar("T")


class SettingsRouter:
    """Routes a channel account to its mapping's helpdesk, building adapters on first use."""

    def __init__(
        self, settings: Settings, helpdesks: Mapping[str, Helpdesk] | None = None,
        channels: Mapping[str, Channel] | None = None,
    ) -> None:
        self._settings = settings
        self._helpdesks: dict[str, Helpdesk] = dict(helpdesks or {})
        self._channels: dict[str, Channel] = dict(channels or {})
        self._lock = threading.Lock()
        self._channel_names: dict[tuple[str, str], str] = {
            (channel.type, channel.account_id): name for name, channel in settings.channels.items()
        }

    def route(self, channel: str, account: str) -> Route | None:
        """The mapping for this channel account, or None; raises ConfigurationError if its
        helpdesk has no adapter in this version."""
        name = self._channel_names.get((channel, account))
        mapping = next((m for m in self._settings.mappings if m.channel == name), None)
        if mapping is None:
            return None
        rules = self.rules_for(mapping)
        return Route(mapping.name, self.helpdesk(mapping.helpdesk), rules, tuple(mapping.tags),
                     long_replies=mapping.long_replies, reply_link=mapping.reply_link,
                     redact_deleted=mapping.redact_deleted, group_id=mapping.group_id,
                     brand_id=mapping.brand_id, priority=mapping.priority,
                     priority_followers=mapping.priority_followers,
                     vip_handles=frozenset(h.lower().lstrip("@") for h in mapping.vip_handles),
                     vip_priority=mapping.vip_priority)

    def rules_for(self, mapping: MappingSettings) -> LinkRules:
        """The link rules a mapping sets."""
        return LinkRules(
            open_tickets_for=frozenset(MessageKind(k) for k in mapping.open_tickets_for),
            include_retweets=mapping.include_retweets,
            unverified_reference=mapping.unverified_reference, dm_public=mapping.dm_public,
            session_window=timedelta(days=mapping.session_window_days),
            references=ReferenceRules(
                helpdesk=self._settings.helpdesks[mapping.helpdesk].type,
                ticket_hosts=tuple(h.lower() for h in mapping.ticket_hosts),
                patterns=tuple(compile_pattern(p) for p in mapping.reference_patterns)),
        )

    def channel(self, kind: str, account: str) -> Channel:
        """The channel adapter for this account; raises ConfigurationError if none."""
        name = self._channel_names.get((kind, account))
        if name is None:
            raise ConfigurationError(f"no {kind} channel is configured for account {account}")
        return self._adapter(self._channels, "channels", name, CHANNEL_ADAPTERS)

    def helpdesk(self, name: str) -> Helpdesk:
        """The helpdesk adapter of this name; raises ConfigurationError if it has none."""
        return self._adapter(self._helpdesks, "helpdesks", name, HELPDESK_ADAPTERS)

    def _adapter(self, built: dict[str, T], section: str, name: str,
                 factories: Mapping[str, Callable[[str, Any], T]]) -> T:
        with self._lock:
            if name not in built:
                settings = getattr(self._settings, section)[name]
                factory = factories.get(settings.type)
                if factory is None:
                    raise ConfigurationError(
                        f"{section}.{name}: no adapter for type {settings.type!r} in this version")
                built[name] = factory(name, settings)
            return built[name]


class Runtime:
    """Everything one process needs: store, queue, router, pipeline."""

    def __init__(
        self, settings: Settings, *, helpdesks: Mapping[str, Helpdesk] | None = None,
        channels: Mapping[str, Channel] | None = None, clock: Clock = utcnow,
        rng: random.Random | None = None, moves_intake: bool = True,
    ) -> None:
        """`moves_intake`: this process takes web processes' journals into the store (a
        worker, `run`, a test); a `serve` web process does not."""
        q = settings.queue
        self.settings = settings
        self._readiness_lock = threading.Lock()
        self._readiness: tuple[float, tuple[bool, dict[str, Any]]] | None = None
        self.store = Store(settings.store.url)
        self.huey = create_huey(q.url, q.name)
        self.queue = TaskQueue(self.huey)
        self.router = SettingsRouter(settings, helpdesks, channels)
        policy = RetryPolicy(max_attempts=q.max_attempts, base_seconds=q.backoff_base_seconds,
                             max_seconds=q.backoff_max_seconds, lease_seconds=q.lease_seconds)
        self.pipeline = Pipeline(self.store, self.queue, self.router, policy=policy, clock=clock,
                                 rng=rng, sweep_grace=timedelta(seconds=q.sweep_grace_seconds))
        self.intake: Intake = make_intake(self.pipeline, journal=settings.store.journal,
                                          moves=moves_intake,
                                          stall_seconds=settings.store.intake_stall_seconds)

    def upgrade_schema(self) -> str | None:
        """Bring the store's schema to the newest migration."""
        from integrations import migrate  # Alembic is only loaded by what migrates

        return migrate.upgrade(self.store.engine)

    def require_current_schema(self) -> None:
        """Raises ConfigurationError when the store needs `deskbridge db upgrade` first."""
        from integrations import migrate

        if not migrate.is_current(self.store.engine):
            raise ConfigurationError(
                "store: schema is not at the newest revision; run `deskbridge db upgrade`")

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Return whether store and queue answer and received events move into the store,
        with details (never a secret) for /readyz.

        One check at a time: probes that arrive while one runs share its answer, so a flood
        of them costs one check, not a thread each.
        """
        arrived = time.monotonic()
        with self._readiness_lock:
            last = self._readiness
            if last is not None and last[0] >= arrived:  # finished while this one waited
                return last[1]
            answer = self._check_readiness()
            self._readiness = (time.monotonic(), answer)
            return answer

    def _check_readiness(self) -> tuple[bool, dict[str, Any]]:
        details: dict[str, Any] = {}
        try:
            self.store.check()
            details["store"] = {"ok": True, "backend": self.store.dialect}
        except DeskbridgeError as err:
            details["store"] = {"ok": False, "backend": self.store.dialect, "error": str(err)}
        try:
            details["queue"] = {"ok": True, **self.queue.check()}
        except DeskbridgeError as err:
            details["queue"] = {"ok": False, "error": str(err)}
        details["intake"] = self.intake.health()
        return all(part["ok"] for part in details.values()), details

    def consumer(self, workers: int | None = None, *, embedded: bool = False) -> Consumer:
        """A huey consumer of thread workers; `embedded` leaves signal handling to the caller."""
        cls = _EmbeddedConsumer if embedded else Consumer
        consumer: Consumer = cls(
            self.huey, workers=workers or self.settings.queue.workers, worker_type="thread",
            periodic=False, graceful_signal="TERM", shutdown_timeout=30, max_delay=1.0,
        )
        return consumer

    def start_sweeper(self, stop: threading.Event) -> threading.Thread:
        """Sweep now (recovering what a crashed worker left), then every sweep interval."""
        interval = self.settings.queue.sweep_interval_seconds

        def loop() -> None:
            while True:
                try:
                    self.pipeline.sweep()
                except DeskbridgeError as err:
                    log.warning("sweep failed", extra={"error": str(err)})
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=loop, name="deskbridge-sweeper", daemon=True)
        thread.start()
        return thread

    def start_intake(self, stop: threading.Event) -> None:
        """Move what web processes journal into the store, continuously, until `stop`."""
        self.intake.start(stop)

    def start_pollers(self, stop: threading.Event) -> list[threading.Thread]:
        """A polling thread for every X channel with `poll = true`."""
        from integrations.twitter.client import make_client
        from integrations.twitter.polling import Poller

        return [Poller(make_client(c), c, self.pipeline, stop).start()
                for c in self.settings.channels.values() if c.type == "x" and c.poll]

    def close(self) -> None:
        self.intake.close()  # before the queue: what it moves into the store gets queued
        self.queue.close()
        self.store.dispose()


def run_worker(runtime: Runtime, workers: int | None = None) -> None:
    """Process items until SIGTERM or SIGINT, which finish the current items, then stop."""
    stop = threading.Event()
    runtime.start_sweeper(stop)
    runtime.start_intake(stop)
    runtime.start_pollers(stop)
    log.info("deskbridge worker running", extra={"pid": os.getpid()})
    try:
        runtime.consumer(workers).run()
    finally:
        stop.set()
        runtime.close()
        log.info("deskbridge worker stopped cleanly", extra={"pid": os.getpid()})


class _EmbeddedConsumer(Consumer):  # type: ignore[misc]
    """A consumer started beside a web server, whose signals the caller handles."""

    def _set_signal_handlers(self) -> None:
        pass
