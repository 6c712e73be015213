"""Shared fixtures: backends (SQLite; PostgreSQL + Redis for real), settings, a fake clock.

PostgreSQL and Redis are the servers on 127.0.0.1 (override with DESKBRIDGE_TEST_POSTGRES_URL
and DESKBRIDGE_TEST_REDIS_URL). Where one is missing its tests skip and say why; under CI
(`CI=true`) a missing service fails the run instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from integrations.config import Settings, parse_settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def only_loopback_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches X, Zendesk, Salesforce or any host that is not this machine.

    Requests' transport refuses other hosts; `responses` (which intercepts above it) and
    the emulators on 127.0.0.1 still work.
    """
    real_send = requests.adapters.HTTPAdapter.send

    def send(self: requests.adapters.HTTPAdapter, request: requests.PreparedRequest,
             **kwargs: Any) -> requests.Response:
        host = urlsplit(request.url or "").hostname or ""
        if host not in LOOPBACK:
            raise AssertionError(f"a test tried to reach {host}: use responses or an emulator")
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)

POSTGRES_URL = os.environ.get(
    "DESKBRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DESKBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(what: str, err: Exception) -> None:
    reason = f"{what} is not reachable ({type(err).__name__}: {err})"
    if IN_CI:
        pytest.fail(f"{reason}; under CI=true a missing service is a failure", pytrace=False)
    pytest.skip(f"{reason}; start it to run the at-scale tests")


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[sa.Engine]:
    url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as err:
        service_missing(f"PostgreSQL at {POSTGRES_URL}", err)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_engine: sa.Engine) -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a fresh schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with postgres_engine.begin() as conn:
        conn.execute(sa.text(f"create schema {schema}"))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with postgres_engine.begin() as conn:
        conn.execute(sa.text(f"drop schema {schema} cascade"))


@pytest.fixture(scope="session")
def redis_server() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as err:
        service_missing(f"Redis at {REDIS_URL}", err)
    return REDIS_URL


@pytest.fixture
def queue_name() -> str:
    return f"deskbridge-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_url(redis_server: str, queue_name: str) -> Iterator[str]:
    yield redis_server
    client = redis.Redis.from_url(redis_server)
    for key in client.scan_iter(f"*{queue_name}*"):
        client.delete(key)


@pytest.fixture(params=["sqlite", "postgres+redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(store URL, queue URL) for the embedded default, then for the at-scale servers."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db", f"sqlite:///{tmp_path}/queue.db"
    return request.getfixturevalue("postgres_url"), request.getfixturevalue("redis_url")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


SETTINGS_TEMPLATE = """
[store]
url = "{store_url}"

[queue]
url = "{queue_url}"
name = "{queue_name}"
{queue_extra}

[channels.acme_x]
type = "x"
account_id = "1000"
handle = "acme"
consumer_key = "ck-test-value"
consumer_secret = "cs-test-secret-value"

[helpdesks.hd]
type = "zendesk"
subdomain = "acme"
email = "support@acme.example"
token = "zd-test-token-value"

[[mappings]]
name = "acme"
channel = "acme_x"
helpdesk = "hd"
"""


@pytest.fixture
def make_config(tmp_path: Path, queue_name: str) -> Callable[..., Path]:
    """A config file for a store and queue URL, one X channel mapped to helpdesk "hd"."""

    def make(store_url: str, queue_url: str, **queue: Any) -> Path:
        extra = "\n".join(f"{k} = {v!r}" for k, v in queue.items())
        path = tmp_path / "deskbridge.toml"
        path.write_text(SETTINGS_TEMPLATE.format(store_url=store_url, queue_url=queue_url,
                                                 queue_name=queue_name, queue_extra=extra))
        return path

    return make


@pytest.fixture
def make_settings(make_config: Callable[..., Path]) -> Callable[..., Settings]:
    """Settings for a store and queue URL, one X channel mapped to helpdesk "hd"."""

    def make(store_url: str, queue_url: str, **queue: Any) -> Settings:
        path = make_config(store_url, queue_url, **queue)
        return parse_settings(path.read_text(), source=str(path), base_dir=path.parent,
                              environ={})

    return make


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class EpochClock:
    """A clock in epoch seconds (as the emulators keep time) that only moves when told to."""

    now: float

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
