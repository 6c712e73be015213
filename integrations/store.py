"""The durable store: inbox, links, identities, cursors, deliveries, dead letters, leases.

SQLite (WAL, synchronous=FULL) by default, PostgreSQL by URL; only the URL differs. The
schema is owned by the Alembic migrations in `migrations/`; `Base.metadata` mirrors it.

Every method takes the current time as `now` instead of reading a clock, so the pipeline's
clock is the only one (and tests control it).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from integrations.batching import Batcher
from integrations.errors import DeskbridgeError, PayloadError, StoreUnavailable
from integrations.events import (
    AgentReply,
    Deletion,
    Event,
    SocialMessage,
    event_json,
    event_type_name,
    from_record,
)
from integrations.filelock import WriteLock, held
from integrations.groupcommit import GroupCommitter
from integrations.payload import UNSTORABLE, storable

log = logging.getLogger("deskbridge.store")


class ItemStatus:
    """Where an inbox item is on its road; a closed set of strings stored as they are."""

    ACCEPTED = "accepted"  # stored, waiting for its first attempt
    PROCESSING = "processing"  # a worker holds it (until claimed_until)
    RETRYING = "retrying"  # an attempt failed; waiting for next_attempt_at
    DONE = "done"
    DEAD = "dead"  # gave up; kept as a dead letter, replayable

    WAITING = (ACCEPTED, RETRYING)
    FINISHED = (DONE, DEAD)
    ALL = (ACCEPTED, PROCESSING, RETRYING, DONE, DEAD)


class DeliveryStatus:
    """The state of one write to a helpdesk or a channel."""

    INTENT = "intent"  # recorded before the call: outcome unknown until `done` or `failed`
    DONE = "done"
    FAILED = "failed"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every database (SQLite keeps naive UTC text, in order)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class InboxItem(Base):
    """One accepted event, stored once per natural key, with where it is on its road."""

    __tablename__ = "inbox_items"
    __table_args__ = (
        UniqueConstraint("channel", "account", "provider_id", name="uq_inbox_items_natural_key"),
        Index("ix_inbox_items_status_next", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(128))
    provider_id: Mapped[str] = mapped_column(String(160))
    event_type: Mapped[str] = mapped_column(String(32))
    conversation_key: Mapped[str] = mapped_column(String(255), index=True)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    deferrals: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Link(Base):
    """Which ticket a message went to, by which rule, and why (in an agent's words)."""

    __tablename__ = "links"
    __table_args__ = (
        UniqueConstraint("channel", "account", "message_id", name="uq_links_message"),
        Index("ix_links_ticket", "helpdesk", "ticket_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("inbox_items.id"))
    channel: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(128))
    message_id: Mapped[str] = mapped_column(String(160))
    conversation_id: Mapped[str | None] = mapped_column(String(160), index=True)
    author_id: Mapped[str | None] = mapped_column(String(64))
    message_kind: Mapped[str | None] = mapped_column(String(16))
    helpdesk: Mapped[str] = mapped_column(String(64))
    ticket_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    rule: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Identity(Base):
    """A social user known as a helpdesk user: verified, or a pending claim."""

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint(
            "channel", "social_user_id", "helpdesk", "helpdesk_user_id", name="uq_identities_pair"
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    social_user_id: Mapped[str] = mapped_column(String(64))
    handle: Mapped[str] = mapped_column(String(64))
    helpdesk: Mapped[str] = mapped_column(String(64))
    helpdesk_user_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # "verified" or "pending"
    ticket_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Cursor(Base):
    """How far a poller has read a stream (for example an account's mentions)."""

    __tablename__ = "cursors"
    __table_args__ = (UniqueConstraint("channel", "account", "stream", name="uq_cursors_stream"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(128))
    stream: Mapped[str] = mapped_column(String(64))
    position: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(Base):
    """One write to a helpdesk or a channel: intent before the call, outcome after."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("inbox_items.id"), index=True)
    target: Mapped[str] = mapped_column(String(96))
    operation: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    ticket_id: Mapped[str | None] = mapped_column(String(64))
    provider_id: Mapped[str | None] = mapped_column(String(160), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeadLetter(Base):
    """An item we gave up on, why, and whether it was replayed since."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("inbox_items.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    died_at: Mapped[datetime] = mapped_column(UTCDateTime)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Lease(Base):
    """A time-limited exclusive hold (one conversation, one worker); expires if its holder dies."""

    __tablename__ = "leases"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


# ---------------------------------------------------------------- what the store can hold

# The event type of a received record that could not be taken as an item (`Store.set_aside`).
REJECTED = "rejected"

# Which column each of an event's values goes into, on the way in (the inbox) or later (links
# and identities): a value a column cannot hold is refused at the door, with a 400 that names
# the field, never a 503 (which the sender retries for hours) or a failure in a worker.
# The lengths are the columns' own.
_ID_FIELDS: dict[type[Any], str] = {SocialMessage: "message_id", AgentReply: "comment_id",
                                    Deletion: "message_id"}
_OPTIONAL = frozenset({"conversation_id", "in_reply_to_id"})


@functools.cache  # on every request's way in: look each column up once
def _limit(model: type[Base], name: str) -> int | None:
    """The length of a String column (None: unbounded)."""
    length: int | None = getattr(inspect(model).columns[name].type, "length", None)
    return length


def _destinations(event: Event) -> list[tuple[str, object, int | None]]:
    """(field, value, its column's length) for each value of `event` a column takes."""
    channel, account, provider_id = event.natural_key
    columns: list[tuple[str, object, int | None]] = [
        ("channel", channel, _limit(InboxItem, "channel")),
        ("account", account, _limit(InboxItem, "account")),
        (_ID_FIELDS[type(event)], provider_id, _limit(InboxItem, "provider_id")),
        ("conversation", event.conversation_key, _limit(InboxItem, "conversation_key")),
    ]
    if isinstance(event, SocialMessage):
        author = event.author
        columns += [("author.user_id", author.user_id, _limit(Link, "author_id")),
                    ("author.handle", author.handle, _limit(Identity, "handle")),
                    ("conversation_id", event.conversation_id, _limit(Link, "conversation_id")),
                    ("in_reply_to_id", event.in_reply_to_id, _limit(InboxItem, "provider_id"))]
    elif isinstance(event, AgentReply):
        columns += [("comment_id", event.comment_id, _limit(InboxItem, "provider_id")),
                    ("ticket_id", event.ticket_id, _limit(Link, "ticket_id"))]
    else:
        columns += [("message_id", event.message_id, _limit(InboxItem, "provider_id")),
                    ("author_id", event.author_id, _limit(Identity, "social_user_id"))]
    return columns


def check_storable(event: Event) -> None:
    """Raise PayloadError, naming the field, when a value of `event` cannot be stored as it
    is: not text, longer than its column, or holding a NUL or a lone surrogate."""
    for name, value, limit in _destinations(event):
        if value is None and name in _OPTIONAL:
            continue
        if not isinstance(value, str):
            raise PayloadError(f"{name} is not text: a {type(value).__name__}")
        if limit is not None and len(value) > limit:
            raise PayloadError(f"{name} is too long for the store: {len(value)} characters, "
                               f"at most {limit}")
        found = UNSTORABLE.search(value)
        if found is not None:
            what = "a NUL character" if found.group() == "\x00" else "a lone surrogate"
            raise PayloadError(f"{name} holds {what} (at {found.start()}), which no store holds")


def _store_error(err: BaseException) -> DeskbridgeError:
    """A database driver's error as ours: a value it could not take is the data's fault
    (PayloadError, never retried), anything else an outage (StoreUnavailable)."""
    if isinstance(err, (psycopg.DataError, psycopg.IntegrityError, sqlite3.DataError,
                        sqlite3.IntegrityError, ValueError, OverflowError)):
        return PayloadError(f"the store cannot hold a value of this event: "
                            f"{type(err).__name__}: {err}")
    return StoreUnavailable(f"store unavailable: {type(err).__name__}: {err}")


def _words(text: str, limit: int = 2000) -> str:
    """`text` as a column can always hold it: storable, bounded."""
    return storable(text)[:limit]


# ---------------------------------------------------------------- snapshots handed out


@dataclass(frozen=True)
class ItemRecord:
    """A read-only snapshot of an inbox item."""

    id: int
    channel: str
    account: str
    provider_id: str
    event_type: str
    conversation_key: str
    status: str
    attempts: int
    deferrals: int
    next_attempt_at: datetime
    last_error: str | None
    outcome: str | None
    received_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    deleted_at: datetime | None
    payload: dict[str, Any]

    @property
    def event(self) -> Event:
        return from_record(self.payload)

    @property
    def natural_key(self) -> tuple[str, str, str]:
        return (self.channel, self.account, self.provider_id)


@dataclass(frozen=True)
class AcceptResult:
    """What `Store.add_items` did: the ids of new items, and for each event given, in order,
    whether it was new (False: stored before, or repeated earlier in the same batch)."""

    new_ids: tuple[int, ...]
    is_new: tuple[bool, ...]


@dataclass(frozen=True)
class LinkRecord:
    message_id: str
    helpdesk: str
    ticket_id: str
    action: str
    rule: str
    reason: str
    verified: bool
    public: bool
    conversation_id: str | None = None
    author_id: str | None = None
    channel: str = ""
    account: str = ""
    message_kind: str | None = None


@dataclass(frozen=True)
class IdentityRecord:
    channel: str
    social_user_id: str
    handle: str
    helpdesk: str
    helpdesk_user_id: str
    status: str
    ticket_id: str | None


@dataclass(frozen=True)
class DeliveryRecord:
    idempotency_key: str
    item_id: int | None
    target: str
    operation: str
    status: str
    ticket_id: str | None
    provider_id: str | None
    error: str | None


@dataclass(frozen=True)
class DeadLetterRecord:
    item_id: int
    reason: str
    attempts: int
    died_at: datetime


def _snapshot(row: Any, cls: type[Any], **extra: Any) -> Any:
    names = {f.name for f in dataclasses.fields(cls)} - set(extra)
    return cls(**{n: getattr(row, n) for n in names}, **extra)


def _item_record(row: InboxItem) -> ItemRecord:
    record: ItemRecord = _snapshot(row, ItemRecord, payload=json.loads(row.payload))
    return record


# ---------------------------------------------------------------- engine


def normalise_url(url: str) -> str:
    """The SQLAlchemy URL for a store URL: PostgreSQL always through psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def sqlite_file(url: str | URL) -> str | None:
    """The database file of a SQLite URL; None for another database or a SQLite in memory."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        return database
    return None


def _check_sqlite(database: str, timeout: float) -> None:
    # A connection of its own, without the engine's set-up: `mode=rw` never makes a file.
    if not Path(database).exists():
        raise StoreUnavailable("store not ready: no database yet (`deskbridge db upgrade` "
                               "makes it)")
    try:
        conn = sqlite3.connect(f"file:{database}?mode=rw", uri=True, timeout=timeout)
        try:
            conn.execute(f"SELECT id FROM {InboxItem.__tablename__} LIMIT 1").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreUnavailable(f"store not ready: {type(err).__name__}: {err}") from err


def create_store_engine(url: str) -> Engine:
    """An engine for a store URL; SQLite gets WAL, full fsync and immediate write locks.

    Raises StoreUnavailable if a SQLite file's folder cannot be created.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    database = sqlite_file(parsed)
    if database:
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreUnavailable(f"cannot create the folder for {database}: {err}") from err
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from pysqlite so that BEGIN IMMEDIATE below is honoured:
    # https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: an item is on disk before the sender hears "accepted", even across power loss.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Never copy the WAL into the database inside a commit, holding the write lock while
    # megabytes are written and fsynced: the store's `Checkpointer` does it beside.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # A read that later writes would otherwise fail with "database is locked" under load.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _upsert(dialect_name: str, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    if dialect_name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


# ---------------------------------------------------------------- the hot insert

ITEM_COLUMNS = ("channel", "account", "provider_id", "event_type", "conversation_key", "payload",
                "status", "attempts", "deferrals", "next_attempt_at", "received_at", "updated_at")


class FastInsert:
    """The inbox insert of every webhook, run on the DBAPI connection itself.

    On this path SQLAlchemy's per-statement bookkeeping costs more than the insert. The SQL
    is still SQLAlchemy's, compiled once for the dialect, and every value still passes through
    its column type's own bind processor, so what is stored is exactly what the ORM stores.

    On a SQLite file the insert keeps a connection of its own (only the group commit's
    leader uses it), out of the pool: checking a connection out and back in for every
    commit cost more than the insert itself.
    """

    def __init__(self, engine: Engine, statement: Any, columns: Sequence[str]) -> None:
        self.engine = engine
        compiled = statement.compile(dialect=engine.dialect, column_keys=list(columns))
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or []) if compiled.positional else None
        types = {c.name: c.type for c in InboxItem.__table__.columns}
        self.processors = {name: types[name].bind_processor(engine.dialect) for name in columns}
        self.sqlite = engine.dialect.name == "sqlite"
        self.dedicated = sqlite_file(engine.url) is not None
        self._own: Any = None  # the SQLite file's dedicated connection (see above)
        self._own_pid: int | None = None

    def run(self, batches: Sequence[list[dict[str, Any]]]) -> list[list[Any]]:
        """Insert each batch's rows in one transaction; per batch, the rows that were new."""
        if self.dedicated:
            return self._run_on(self._dedicated(), batches, keep=True)
        return self._run_on(self.engine.raw_connection(), batches, keep=False)

    def close(self) -> None:
        """Close the dedicated connection (the engine's pool closes the others)."""
        if self._own is not None and self._own_pid == os.getpid():
            self._own.close()
        self._own = None

    def _dedicated(self) -> Any:
        if self._own is None or self._own_pid != os.getpid():
            connection = self.engine.raw_connection()
            connection.detach()  # it is ours until closed
            self._own, self._own_pid = connection, os.getpid()
        return self._own

    def _run_on(self, connection: Any, batches: Sequence[list[dict[str, Any]]],
                keep: bool) -> list[list[Any]]:
        try:
            cursor = connection.cursor()
            if self.sqlite:  # transactions are ours to open (see _sqlite_on_connect)
                cursor.execute("BEGIN IMMEDIATE")
            try:
                results = [[tuple(r) for row in rows for r in self._insert(cursor, row)]
                           for rows in batches]
            except BaseException:
                self._end(connection, cursor, "ROLLBACK")
                raise
            self._end(connection, cursor, "COMMIT")
            cursor.close()
            return results
        except BaseException:
            if keep:  # a connection in an unknown state is not used again
                self._own = None
                connection.invalidate()
            raise
        finally:
            if not keep:
                connection.close()

    def _end(self, connection: Any, cursor: Any, verb: str) -> None:
        if self.sqlite:
            cursor.execute(verb)
        elif verb == "COMMIT":
            connection.commit()
        else:
            connection.rollback()

    def _insert(self, cursor: Any, row: dict[str, Any]) -> list[Any]:
        values = {}
        for name, value in row.items():
            process = self.processors[name]
            values[name] = process(value) if process else value
        params = [values[name] for name in self.order] if self.order is not None else values
        cursor.execute(self.sql, params)
        return list(cursor.fetchall())


class Checkpointer:
    """Copies a SQLite store's WAL into the database on a thread of its own.

    After writes (no store connection checkpoints inside a commit, see `_sqlite_on_connect`),
    at most once every `every` seconds, a PASSIVE checkpoint
    runs on a pooled connection: it takes no write lock, so the web tier goes on inserting
    while the copy and its fsync happen. A WAL that still holds more than `restart_pages`
    afterwards (writes never paused long enough for it to be copied whole) gets a RESTART
    checkpoint, which waits for the writers of the moment, so the file cannot grow forever.
    """

    def __init__(self, engine: Engine, every: float = 1.0, restart_pages: int = 16384) -> None:
        self.engine = engine
        self.restart_pages = restart_pages
        self._batcher: Batcher[None] = Batcher(self._checkpoint, linger=every,
                                               name="deskbridge-checkpoint")

    def written(self) -> None:
        """Say the WAL has grown; a checkpoint follows within `every` seconds."""
        self._batcher.put(None)

    def flush(self) -> bool:
        return self._batcher.flush()

    def close(self) -> None:
        self._batcher.close()

    def _checkpoint(self, _writes: list[None]) -> None:
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            _busy, wal_pages, _copied = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if wal_pages > self.restart_pages:
                cursor.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            cursor.close()
        except sqlite3.Error as err:  # the next write tries again; SQLite's own state is safe
            log.warning("WAL checkpoint failed", extra={"error": f"{type(err).__name__}: {err}"})
        finally:
            connection.close()


# ---------------------------------------------------------------- the store


class Store:
    """All reads and writes of deskbridge's state; each method is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_store_engine(url)
        self.sqlite_file = sqlite_file(self.engine.url)  # None: not a SQLite file
        self._write_lock = WriteLock(f"{self.sqlite_file}.lock") if self.sqlite_file else None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._fast_insert = FastInsert(self.engine, (
            _upsert(self.dialect, InboxItem)
            .on_conflict_do_nothing(index_elements=["channel", "account", "provider_id"])
            .returning(InboxItem.id, InboxItem.channel, InboxItem.account, InboxItem.provider_id)
        ), ITEM_COLUMNS)
        self._inserts: GroupCommitter[list[dict[str, Any]], list[Any] | PayloadError] = \
            GroupCommitter(self._insert_batch)
        self._checkpointer = Checkpointer(self.engine) if self._fast_insert.dedicated else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction; committed on success, rolled back on error.

        Raises StoreUnavailable when the database cannot be reached or written.
        """
        try:
            with self._serialised(), self._sessions.begin() as session:
                yield session
        except (OperationalError, InterfaceError) as err:
            raise StoreUnavailable(f"store unavailable: {err.orig}") from err
        except PoolTimeout as err:
            raise StoreUnavailable(f"store unavailable: {err}") from err
        except DBAPIError as err:
            if not err.connection_invalidated:  # a value refused: the caller's data, no outage
                raise
            raise StoreUnavailable(f"store unavailable: {err.orig}") from err
        if self._checkpointer is not None:
            self._checkpointer.written()

    def _serialised(self) -> AbstractContextManager[None]:
        # SQLite has one writer at a time; waiting on our lock beats its sleeping busy handler.
        return held(self._write_lock)

    def check(self, timeout: float = 1.0) -> None:
        """Prove the store answers within about `timeout` seconds and its schema is installed;
        raises StoreUnavailable.

        Bounded, because /readyz asks it: with the store's own 30 s lock wait (a new SQLite
        connection's set-up waits for a lock too), a locked store held every request thread
        in probes, and X deliveries, which only need the journal, timed out behind them.
        """
        if self.sqlite_file:
            return _check_sqlite(self.sqlite_file, timeout)
        try:
            with self.engine.connect() as conn:
                # This transaction only: it ends when the connection goes back to the pool.
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
                conn.execute(select(InboxItem.id).limit(1)).all()  # no count: no scan
        except SQLAlchemyError as err:
            raise StoreUnavailable(f"store not ready: {type(err).__name__}: {err.args[0]}") from err

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._fast_insert.close()
        self.engine.dispose()

    # ------------------------------------------------------------ inbox

    def add_items(self, events: Sequence[Event], now: datetime,
                  records: Sequence[str] | None = None) -> AcceptResult:
        """Store events once per natural key, in one transaction; duplicates are no-ops.

        `records`, when given, are the events' `to_record` JSON, already made by the caller.
        Raises PayloadError, naming the field, for an event the store cannot hold (nothing
        of the batch is stored then), StoreUnavailable when the store cannot be written.
        """
        if not events:
            return AcceptResult((), ())
        for ev in events:
            check_storable(ev)
        rows, seen = [], set()
        for n, ev in enumerate(events):
            if ev.natural_key in seen:
                continue
            seen.add(ev.natural_key)
            rows.append(self._item_row(ev, now, records[n] if records is not None else None))
        inserted = self._inserts.submit(rows)
        if isinstance(inserted, PayloadError):
            raise inserted
        new_keys = {(r[1], r[2], r[3]) for r in inserted}
        is_new = []
        for ev in events:  # a key is new once; a repeat, even in this batch, is a duplicate
            is_new.append(ev.natural_key in new_keys)
            new_keys.discard(ev.natural_key)
        return AcceptResult(tuple(sorted(r[0] for r in inserted)), tuple(is_new))

    def _insert_batch(
        self, batches: Sequence[list[dict[str, Any]]],
    ) -> list[list[Any] | PayloadError]:
        """Insert every caller's rows in one transaction; per caller, the rows that were new.

        When a value of one caller's rows is refused, each caller's rows go in alone, so that
        only that caller learns it (its PayloadError is its result) and the others are stored.
        Raises StoreUnavailable when the database cannot be reached or written.
        """
        try:
            return list(self._insert_now(batches))
        except PayloadError:
            if len(batches) == 1:
                raise
        results: list[list[Any] | PayloadError] = []
        for batch in batches:
            try:
                results.extend(self._insert_now([batch]))
            except PayloadError as err:
                results.append(err)
        return results

    def _insert_now(self, batches: Sequence[list[dict[str, Any]]]) -> list[list[Any]]:
        """Raises PayloadError for a value the database refused, StoreUnavailable else."""
        try:
            with self._serialised():
                inserted = self._fast_insert.run(batches)
            if self._checkpointer is not None:
                self._checkpointer.written()
            return inserted
        except DBAPIError as err:
            raise _store_error(err.orig or err) from err
        except (sqlite3.Error, psycopg.Error, ValueError, OverflowError) as err:
            raise _store_error(err) from err

    @staticmethod
    def _item_row(ev: Event, now: datetime, record: str | None) -> dict[str, Any]:
        channel, account, provider_id = ev.natural_key
        return {
            "channel": channel,
            "account": account,
            "provider_id": provider_id,
            "event_type": event_type_name(ev),
            "conversation_key": ev.conversation_key,
            "payload": record if record is not None else event_json(ev),
            "status": ItemStatus.ACCEPTED,
            "attempts": 0,
            "deferrals": 0,
            "next_attempt_at": now,
            "received_at": now,
            "updated_at": now,
        }

    def get_item(self, item_id: int) -> ItemRecord | None:
        with self.session() as s:
            row = s.get(InboxItem, item_id)
            return _item_record(row) if row else None

    def mark_deleted(self, channel: str, account: str, message_id: str, now: datetime) -> bool:
        """Honour a deletion: keep the item, but blank its text, links and raw payload.

        Returns False when no such message was stored.
        """
        with self.session() as s:
            row = s.scalars(select(InboxItem).filter_by(
                channel=channel, account=account, provider_id=message_id)).first()
            if row is None:
                return False
            payload = json.loads(row.payload)
            payload.update(text="", expanded_urls=[], media_urls=[], raw={"deleted": True})
            row.payload, row.deleted_at, row.updated_at = json.dumps(payload), now, now
            return True

    def find_item(self, channel: str, account: str, provider_id: str) -> ItemRecord | None:
        with self.session() as s:
            row = s.scalars(
                select(InboxItem).filter_by(
                    channel=channel, account=account, provider_id=provider_id
                )
            ).first()
            return _item_record(row) if row else None

    def list_items(self, status: str | None = None, limit: int = 50) -> list[ItemRecord]:
        """The newest items first, optionally only those with one status."""
        stmt = select(InboxItem).order_by(InboxItem.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(InboxItem.status == status)
        with self.session() as s:
            return [_item_record(r) for r in s.scalars(stmt)]

    def count_items(self) -> dict[str, int]:
        """How many items there are in each status."""
        stmt = select(InboxItem.status, func.count()).group_by(InboxItem.status)
        with self.session() as s:
            counts: dict[str, int] = {status: n for status, n in s.execute(stmt)}
        return {status: counts.get(status, 0) for status in ItemStatus.ALL}

    def claim_item(
        self, item_id: int, owner: str, now: datetime, lease: timedelta
    ) -> ItemRecord | None:
        """Take an item that is due (or whose holder's claim ran out) for processing.

        Returns the item, or None when it is done, dead, not due yet, or held by another.
        """
        due = InboxItem.status.in_(ItemStatus.WAITING) & (InboxItem.next_attempt_at <= now)
        abandoned = (InboxItem.status == ItemStatus.PROCESSING) & (InboxItem.claimed_until < now)
        stmt = (
            update(InboxItem)
            .where(InboxItem.id == item_id, or_(due, abandoned))
            .values(
                status=ItemStatus.PROCESSING,
                claimed_by=owner,
                claimed_until=now + lease,
                attempts=InboxItem.attempts + 1,
                updated_at=now,
            )
            .returning(InboxItem.id)
        )
        with self.session() as s:
            if s.execute(stmt).first() is None:
                return None
            return _item_record(s.get_one(InboxItem, item_id))

    def _settle(self, item_id: int, owner: str, **values: Any) -> bool:
        stmt = (
            update(InboxItem)
            .where(
                InboxItem.id == item_id,
                InboxItem.claimed_by == owner,
                InboxItem.status == ItemStatus.PROCESSING,
            )
            .values(claimed_by=None, claimed_until=None, **values)
            .returning(InboxItem.id)
        )
        with self.session() as s:
            return s.execute(stmt).first() is not None

    def finish_item(self, item_id: int, owner: str, now: datetime, outcome: str) -> bool:
        """Mark a claimed item done; False if the claim was lost to another worker."""
        return self._settle(
            item_id, owner, status=ItemStatus.DONE, outcome=outcome, last_error=None,
            updated_at=now, finished_at=now,
        )

    def retry_item(
        self, item_id: int, owner: str, now: datetime, at: datetime, error: str,
        *, counts_as_attempt: bool = True,
    ) -> bool:
        """Put a claimed item back to wait until `at`.

        A deferral the provider asked for (rate limit) does not count as a failed attempt.
        """
        values: dict[str, Any] = {
            "status": ItemStatus.RETRYING, "next_attempt_at": at, "last_error": error,
            "updated_at": now,
        }
        if not counts_as_attempt:
            values["attempts"] = InboxItem.attempts - 1
            values["deferrals"] = InboxItem.deferrals + 1
        return self._settle(item_id, owner, **values)

    def release_item(self, item_id: int, owner: str, now: datetime, at: datetime) -> bool:
        """Give a claimed item back untouched (its conversation was busy), due again at `at`."""
        return self._settle(
            item_id, owner, status=ItemStatus.RETRYING, next_attempt_at=at,
            attempts=InboxItem.attempts - 1, updated_at=now,
        )

    def kill_item(self, item_id: int, owner: str, now: datetime, reason: str) -> bool:
        """Give up on a claimed item: it becomes a dead letter, kept and replayable."""
        with self.session() as s:
            row = s.get(InboxItem, item_id, with_for_update=True)
            if row is None or row.claimed_by != owner or row.status != ItemStatus.PROCESSING:
                return False
            row.status, row.last_error, row.updated_at = ItemStatus.DEAD, reason, now
            row.claimed_by = row.claimed_until = None
            s.add(DeadLetter(item_id=item_id, reason=reason, attempts=row.attempts, died_at=now))
            return True

    def set_aside(self, key: tuple[str, str, str], raw: bytes, reason: str,
                  now: datetime) -> bool:
        """Keep a received record that could not be taken as an item, as a dead letter.

        The item (type `rejected`, its key where the record was found) keeps the record's
        bytes losslessly (base64) and the reason in words; the dead letter lists it where the
        admin sees every other. Returns False when it was set aside before (same key).
        Raises StoreUnavailable when the store cannot be written.
        """
        reason = _words(reason)
        channel, account, provider_id = (_words(part, 100) for part in key)
        payload = json.dumps({"type": REJECTED, "reason": reason,
                              "raw_base64": base64.b64encode(raw).decode("ascii")})
        stmt = (
            _upsert(self.dialect, InboxItem)
            .values(channel=channel, account=account, provider_id=provider_id,
                    event_type=REJECTED, conversation_key=f"{channel}:{account}",
                    payload=payload, status=ItemStatus.DEAD, attempts=0, deferrals=0,
                    next_attempt_at=now, received_at=now, updated_at=now, finished_at=now,
                    last_error=reason)
            .on_conflict_do_nothing(index_elements=["channel", "account", "provider_id"])
            .returning(InboxItem.id)
        )
        with self.session() as s:
            row = s.execute(stmt).first()
            if row is None:
                return False
            s.add(DeadLetter(item_id=row[0], reason=reason, attempts=0, died_at=now))
            return True

    def due_for_sweep(self, now: datetime, grace: timedelta) -> list[int]:
        """Items whose task may be lost: overdue by `grace`, or abandoned by a dead worker.

        Their due time is moved to now, so one sweep does not find them again at once.
        """
        overdue = InboxItem.status.in_(ItemStatus.WAITING) & (
            InboxItem.next_attempt_at < now - grace
        )
        abandoned = (InboxItem.status == ItemStatus.PROCESSING) & (InboxItem.claimed_until < now)
        with self.session() as s:
            ids = list(s.scalars(select(InboxItem.id).where(or_(overdue, abandoned)).limit(1000)))
            if ids:
                s.execute(
                    update(InboxItem)
                    .where(InboxItem.id.in_(ids), InboxItem.status.in_(ItemStatus.WAITING))
                    .values(next_attempt_at=now, updated_at=now)
                )
            return ids

    def replay(self, item_ids: Iterable[int] | None, now: datetime) -> list[int]:
        """Send dead items round again with fresh attempts; None replays every dead item."""
        stmt = select(InboxItem).where(InboxItem.status == ItemStatus.DEAD)
        if item_ids is not None:
            stmt = stmt.where(InboxItem.id.in_(list(item_ids)))
        with self.session() as s:
            rows = list(s.scalars(stmt.with_for_update()))
            for row in rows:
                row.status, row.attempts, row.deferrals = ItemStatus.ACCEPTED, 0, 0
                row.next_attempt_at = row.updated_at = now
            ids = [r.id for r in rows]
            if ids:
                s.execute(
                    update(DeadLetter)
                    .where(DeadLetter.item_id.in_(ids), DeadLetter.replayed_at.is_(None))
                    .values(replayed_at=now)
                )
            return ids

    def dead_letters(self, limit: int = 100) -> list[DeadLetterRecord]:
        """Dead letters not replayed since, newest first."""
        stmt = (
            select(DeadLetter)
            .where(DeadLetter.replayed_at.is_(None))
            .order_by(DeadLetter.id.desc())
            .limit(limit)
        )
        with self.session() as s:
            return [_snapshot(r, DeadLetterRecord) for r in s.scalars(stmt)]

    # ------------------------------------------------------------ leases

    def acquire_lease(self, key: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        """Hold `key` for `ttl` unless someone else holds it; True if we hold it now."""
        stmt = (
            _upsert(self.dialect, Lease)
            .values(key=key, owner=owner, expires_at=now + ttl)
            .on_conflict_do_update(
                index_elements=["key"],
                set_={"owner": owner, "expires_at": now + ttl},
                where=or_(Lease.expires_at < now, Lease.owner == owner),
            )
        )
        with self.session() as s:
            s.execute(stmt)
            holder = s.scalar(select(Lease.owner).where(Lease.key == key))
        return holder == owner

    def release_lease(self, key: str, owner: str) -> None:
        with self.session() as s:
            s.execute(delete(Lease).where(Lease.key == key, Lease.owner == owner))

    # ------------------------------------------------------------ links

    def record_link(self, item_id: int | None, link: LinkRecord, now: datetime) -> None:
        """Remember where a message went; recording the same message twice keeps the first."""
        values = dataclasses.asdict(link) | {"item_id": item_id, "created_at": now}
        stmt = (
            _upsert(self.dialect, Link)
            .values(values)
            .on_conflict_do_nothing(index_elements=["channel", "account", "message_id"])
        )
        with self.session() as s:
            s.execute(stmt)

    def link_for_message(self, channel: str, account: str, message_id: str) -> LinkRecord | None:
        with self.session() as s:
            row = s.scalars(
                select(Link).filter_by(channel=channel, account=account, message_id=message_id)
            ).first()
            return _snapshot(row, LinkRecord) if row else None

    def latest_link_in_conversation(
        self, channel: str, account: str, conversation_id: str, helpdesk: str,
    ) -> LinkRecord | None:
        """The newest link of any message of this conversation to this helpdesk."""
        stmt = (select(Link).filter_by(channel=channel, account=account,
                                       conversation_id=conversation_id, helpdesk=helpdesk)
                .order_by(Link.id.desc()).limit(1))
        with self.session() as s:
            row = s.scalars(stmt).first()
            return _snapshot(row, LinkRecord) if row else None

    def links_for_ticket(self, helpdesk: str, ticket_id: str) -> list[LinkRecord]:
        """Every message linked to a ticket, oldest first."""
        stmt = select(Link).filter_by(helpdesk=helpdesk, ticket_id=ticket_id).order_by(Link.id)
        with self.session() as s:
            return [_snapshot(r, LinkRecord) for r in s.scalars(stmt)]

    # ------------------------------------------------------------ identities

    def save_identity(self, identity: IdentityRecord, now: datetime) -> None:
        """Create or update the pairing of a social user and a helpdesk user."""
        values = dataclasses.asdict(identity) | {"created_at": now, "updated_at": now}
        stmt = (
            _upsert(self.dialect, Identity)
            .values(values)
            .on_conflict_do_update(
                index_elements=["channel", "social_user_id", "helpdesk", "helpdesk_user_id"],
                set_={"status": identity.status, "handle": identity.handle,
                      "ticket_id": identity.ticket_id, "updated_at": now},
            )
        )
        with self.session() as s:
            s.execute(stmt)

    def confirm_identity(self, helpdesk: str, ticket_id: str, now: datetime) -> list[IdentityRecord]:
        """An agent confirmed the pending claims on a ticket: those senders are its requester.

        Their messages already on the ticket become verified too, so the agent's answer can go
        to them. Returns the identities now verified.
        """
        stmt = select(Identity).filter_by(helpdesk=helpdesk, ticket_id=ticket_id,
                                          status="pending")
        with self.session() as s:
            rows = list(s.scalars(stmt))
            for row in rows:
                row.status, row.updated_at = "verified", now
                s.execute(update(Link).filter_by(
                    helpdesk=helpdesk, ticket_id=ticket_id, channel=row.channel,
                    author_id=row.social_user_id).values(verified=True))
            return [_snapshot(r, IdentityRecord) for r in rows]

    def identities_for(self, channel: str, social_user_id: str) -> list[IdentityRecord]:
        stmt = select(Identity).filter_by(channel=channel, social_user_id=social_user_id)
        with self.session() as s:
            return [_snapshot(r, IdentityRecord) for r in s.scalars(stmt.order_by(Identity.id))]

    # ------------------------------------------------------------ cursors

    def get_cursor(self, channel: str, account: str, stream: str) -> str | None:
        with self.session() as s:
            return s.scalar(
                select(Cursor.position).filter_by(channel=channel, account=account, stream=stream)
            )

    def set_cursor(
        self, channel: str, account: str, stream: str, position: str, now: datetime
    ) -> None:
        stmt = (
            _upsert(self.dialect, Cursor)
            .values(channel=channel, account=account, stream=stream, position=position,
                    updated_at=now)
            .on_conflict_do_update(
                index_elements=["channel", "account", "stream"],
                set_={"position": position, "updated_at": now},
            )
        )
        with self.session() as s:
            s.execute(stmt)

    # ------------------------------------------------------------ deliveries

    def begin_delivery(
        self, key: str, item_id: int | None, target: str, operation: str, now: datetime
    ) -> tuple[DeliveryRecord, bool]:
        """Record the intent to write, before the call; returns the record and if it is new.

        An existing record in `intent` means an earlier attempt's outcome is unknown: the
        caller must ask the provider whether the write happened before writing again.
        """
        stmt = (
            _upsert(self.dialect, Delivery)
            .values(idempotency_key=key, item_id=item_id, target=target, operation=operation,
                    status=DeliveryStatus.INTENT, created_at=now)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(Delivery.id)
        )
        with self.session() as s:
            fresh = s.execute(stmt).first() is not None
            row = s.scalars(select(Delivery).filter_by(idempotency_key=key)).one()
            return _snapshot(row, DeliveryRecord), fresh

    def complete_delivery(
        self, key: str, ticket_id: str | None, provider_id: str | None, now: datetime,
    ) -> None:
        with self.session() as s:
            s.execute(
                update(Delivery).where(Delivery.idempotency_key == key).values(
                    status=DeliveryStatus.DONE, ticket_id=ticket_id, provider_id=provider_id,
                    error=None, completed_at=now,
                )
            )

    def delivery_by_provider_id(self, target: str, provider_id: str) -> DeliveryRecord | None:
        """Our completed write that the provider knows by this id (an echo of our own post)."""
        stmt = select(Delivery).filter_by(target=target, provider_id=provider_id,
                                          status=DeliveryStatus.DONE)
        with self.session() as s:
            row = s.scalars(stmt).first()
            return _snapshot(row, DeliveryRecord) if row else None

    def fail_delivery(self, key: str, error: str, now: datetime) -> None:
        """Record that a write certainly did not happen (the provider refused it)."""
        with self.session() as s:
            s.execute(
                update(Delivery).where(Delivery.idempotency_key == key).values(
                    status=DeliveryStatus.FAILED, error=error, completed_at=now,
                )
            )

    def delivery(self, key: str) -> DeliveryRecord | None:
        """The write recorded under this idempotency key, if any."""
        with self.session() as s:
            row = s.scalars(select(Delivery).filter_by(idempotency_key=key)).first()
            return _snapshot(row, DeliveryRecord) if row else None

    def deliveries_for_item(self, item_id: int) -> list[DeliveryRecord]:
        stmt = select(Delivery).filter_by(item_id=item_id).order_by(Delivery.id)
        with self.session() as s:
            return [_snapshot(r, DeliveryRecord) for r in s.scalars(stmt)]
