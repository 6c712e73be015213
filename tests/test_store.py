"""The store on SQLite and on PostgreSQL: dedupe, claims, leases, retries, dead letters."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from integrations import migrate
from integrations.errors import PayloadError, StoreUnavailable
from integrations.events import to_record
from integrations.store import (
    Checkpointer,
    DeliveryStatus,
    IdentityRecord,
    ItemStatus,
    LinkRecord,
    Store,
)
from tests.factories import agent_reply, message

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    migrate.upgrade(s.engine)
    yield s
    s.dispose()


def test_schema_is_at_head_after_upgrade(store: Store) -> None:
    assert migrate.is_current(store.engine)
    assert migrate.current_revision(store.engine) == migrate.head_revision()


def test_upgrade_keeps_data_written_by_an_older_schema(store_url: str) -> None:
    old = Store(store_url)
    migrate.upgrade(old.engine, "0001")
    with old.engine.begin() as conn:
        conn.execute(sa.text(
            "insert into inbox_items (channel, account, provider_id, event_type, "
            "conversation_key, payload, status, attempts, deferrals, next_attempt_at, "
            "received_at, updated_at) values ('x', '1000', '1', 'message', 'x:1000:42', :p, "
            "'done', 1, 0, :t, :t, :t)"), {"p": json.dumps(to_record(message("1"))),
                                           "t": NOW.replace(tzinfo=None)})
    migrate.upgrade(old.engine)
    item = old.find_item("x", "1000", "1")
    assert item is not None and item.event == message("1") and item.deleted_at is None
    old.dispose()


def test_same_item_stored_three_times_is_one_row(store: Store) -> None:
    first = store.add_items([message("1")], NOW)
    second = store.add_items([message("1")], NOW)
    third = store.add_items([message("1"), message("1"), message("2")], NOW)
    assert len(first.new_ids) == 1 and second.new_ids == ()
    assert second.is_new == (False,)
    assert len(third.new_ids) == 1 and third.is_new == (False, False, True)  # only "2" is new
    assert len(store.list_items()) == 2


def test_a_broken_insert_connection_is_replaced(store: Store) -> None:
    if store.dialect != "sqlite":
        pytest.skip("only a SQLite file store keeps a connection of its own for inserts")
    store.add_items([message("1")], NOW)
    store._fast_insert._own.dbapi_connection.close()  # it dies under the insert
    with pytest.raises(StoreUnavailable):
        store.add_items([message("2")], NOW)
    assert len(store.add_items([message("2")], NOW).new_ids) == 1
    assert {i.provider_id for i in store.list_items()} == {"1", "2"}


def wal_frames(store: Store) -> int:
    """Frames in the WAL after a PASSIVE checkpoint (which copies them, so all are copied)."""
    connection = store.engine.raw_connection()
    try:
        _busy, frames, copied = connection.cursor().execute(
            "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert copied == frames
        return int(frames)
    finally:
        connection.close()


def test_the_wal_is_checkpointed_beside_the_inserts_not_inside_them(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/store.db")
    migrate.upgrade(store.engine)
    store._checkpointer = Checkpointer(store.engine, every=60)  # only when flushed, here
    database = tmp_path / "store.db"
    store.add_items([message("0")], NOW)
    assert store._checkpointer.flush()
    size = database.stat().st_size
    for n in range(1, 60):  # ~300 WAL pages: no commit copies them into the database
        store.add_items([message(str(n))], NOW)
    assert database.stat().st_size == size
    assert store._checkpointer.flush()
    assert database.stat().st_size > size  # the checkpointer did
    assert len(store.list_items(limit=100)) == 60
    store.dispose()


def test_a_wal_that_never_empties_is_restarted(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/store.db")
    migrate.upgrade(store.engine)
    store._checkpointer = Checkpointer(store.engine, every=60, restart_pages=0)
    for n in range(30):
        store.add_items([message(str(n))], NOW)
    assert wal_frames(store) > 100
    assert store._checkpointer.flush()  # PASSIVE, then RESTART: the next write starts afresh
    store.add_items([message("30")], NOW)
    assert wal_frames(store) < 20
    store.dispose()


def test_item_round_trips_its_event(store: Store) -> None:
    original = message("77", text="Ticket #48213 — nog steeds niks 😡")
    (item_id,) = store.add_items([original], NOW).new_ids
    item = store.get_item(item_id)
    assert item is not None
    assert item.event == original
    assert item.received_at == NOW and item.received_at.tzinfo is not None
    assert item.status == ItemStatus.ACCEPTED


def test_different_event_types_do_not_collide(store: Store) -> None:
    result = store.add_items([message("9001"), agent_reply("9001")], NOW)
    assert len(result.new_ids) == 2


def test_claim_is_exclusive_until_it_runs_out(store: Store) -> None:
    (item_id,) = store.add_items([message("1")], NOW).new_ids
    assert store.claim_item(item_id, "a", NOW, LEASE) is not None
    assert store.claim_item(item_id, "b", NOW + timedelta(seconds=30), LEASE) is None
    taken = store.claim_item(item_id, "b", NOW + timedelta(seconds=61), LEASE)
    assert taken is not None and taken.attempts == 2
    assert not store.finish_item(item_id, "a", NOW, "late")  # a lost its claim
    assert store.finish_item(item_id, "b", NOW, "ok")
    assert store.claim_item(item_id, "c", NOW + timedelta(days=1), LEASE) is None


def test_claim_waits_for_next_attempt_time(store: Store) -> None:
    (item_id,) = store.add_items([message("1")], NOW).new_ids
    store.claim_item(item_id, "a", NOW, LEASE)
    store.retry_item(item_id, "a", NOW, NOW + timedelta(seconds=10), "boom")
    assert store.claim_item(item_id, "a", NOW + timedelta(seconds=9), LEASE) is None
    assert store.claim_item(item_id, "a", NOW + timedelta(seconds=10), LEASE) is not None


def test_deferral_does_not_count_as_attempt(store: Store) -> None:
    (item_id,) = store.add_items([message("1")], NOW).new_ids
    store.claim_item(item_id, "a", NOW, LEASE)
    store.retry_item(item_id, "a", NOW, NOW, "429", counts_as_attempt=False)
    item = store.get_item(item_id)
    assert item is not None and (item.attempts, item.deferrals) == (0, 1)


def test_lease_is_exclusive_and_expires(store: Store) -> None:
    assert store.acquire_lease("conv", "a", NOW, LEASE)
    assert store.acquire_lease("conv", "a", NOW, LEASE)  # re-entrant for its owner
    assert not store.acquire_lease("conv", "b", NOW + timedelta(seconds=59), LEASE)
    assert store.acquire_lease("other", "b", NOW, LEASE)
    assert store.acquire_lease("conv", "b", NOW + timedelta(seconds=61), LEASE)
    store.release_lease("conv", "a")  # not a's any more: no effect
    assert not store.acquire_lease("conv", "c", NOW + timedelta(seconds=62), LEASE)
    store.release_lease("conv", "b")
    assert store.acquire_lease("conv", "c", NOW + timedelta(seconds=62), LEASE)


def test_dead_letter_is_kept_listed_and_replayable(store: Store) -> None:
    (item_id,) = store.add_items([message("1")], NOW).new_ids
    store.claim_item(item_id, "a", NOW, LEASE)
    assert store.kill_item(item_id, "a", NOW, "ProviderError: 422")
    assert [d.item_id for d in store.dead_letters()] == [item_id]
    assert [i.id for i in store.list_items(ItemStatus.DEAD)] == [item_id]
    assert store.replay(None, NOW) == [item_id]
    assert store.dead_letters() == []
    item = store.get_item(item_id)
    assert item is not None and item.status == ItemStatus.ACCEPTED and item.attempts == 0
    assert store.replay([item_id], NOW) == []  # not dead any more


def test_sweep_finds_overdue_and_abandoned_items(store: Store) -> None:
    overdue, abandoned, fresh = store.add_items(
        [message("1", author_id="1"), message("2", author_id="2"),
         message("3", author_id="3")], NOW).new_ids
    store.claim_item(abandoned, "dead-worker", NOW, LEASE)
    later = NOW + timedelta(seconds=90)
    store.add_items([message("4", author_id="4")], later)
    found = store.due_for_sweep(later + timedelta(seconds=1), timedelta(seconds=60))
    assert set(found) == {overdue, abandoned, fresh}
    # Found items are due "now": the next sweep within the grace does not find them again.
    assert store.due_for_sweep(later + timedelta(seconds=2), timedelta(seconds=60)) == [abandoned]


def test_delivery_intent_then_outcome(store: Store) -> None:
    (item_id,) = store.add_items([message("1")], NOW).new_ids
    record, fresh = store.begin_delivery("k1", item_id, "hd", "create_ticket", NOW)
    assert fresh and record.status == DeliveryStatus.INTENT
    again, fresh_again = store.begin_delivery("k1", item_id, "hd", "create_ticket", NOW)
    assert not fresh_again and again.status == DeliveryStatus.INTENT
    store.complete_delivery("k1", "1001", "c-1", NOW)
    (done,) = store.deliveries_for_item(item_id)
    assert (done.status, done.ticket_id, done.provider_id) == (DeliveryStatus.DONE, "1001", "c-1")
    assert store.delivery_by_provider_id("hd", "c-1") == done
    assert store.delivery_by_provider_id("x", "c-1") is None


def test_links_identities_cursors(store: Store) -> None:
    link = LinkRecord("1", "hd", "1001", "create", "new", "no ticket yet", True, True,
                      conversation_id="1", author_id="42", channel="x", account="1000")
    store.record_link(None, link, NOW)
    store.record_link(None, link.__class__(**{**link.__dict__, "ticket_id": "999"}), NOW)
    assert store.link_for_message("x", "1000", "1") == link  # the first link stands
    assert store.links_for_ticket("hd", "1001") == [link]

    pending = IdentityRecord("x", "42", "user42", "hd", "7", "pending", "1001")
    store.save_identity(pending, NOW)
    store.save_identity(IdentityRecord("x", "42", "user42", "hd", "7", "verified", None), NOW)
    assert [i.status for i in store.identities_for("x", "42")] == ["verified"]

    assert store.get_cursor("x", "1000", "mentions") is None
    store.set_cursor("x", "1000", "mentions", "1850", NOW)
    store.set_cursor("x", "1000", "mentions", "1851", NOW)
    assert store.get_cursor("x", "1000", "mentions") == "1851"


def test_a_value_the_database_refuses_is_the_datas_fault_not_an_outage(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the door's checks (switched off here), what the database itself refuses (NUL on
    PostgreSQL, a lone surrogate on SQLite) is a PayloadError: a 400, never a 503."""
    monkeypatch.setattr("integrations.store.check_storable", lambda event: None)
    bad = "18\x0050" if store.dialect == "postgresql" else "18\ud80050"
    with pytest.raises(PayloadError) as refused:
        store.add_items([message(bad)], NOW)
    assert not isinstance(refused.value, StoreUnavailable)
    assert store.add_items([message("1")], NOW).is_new == (True,)  # the store is fine


def test_one_callers_refused_value_does_not_fail_the_others_in_its_group_commit(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests that share a transaction: only the one whose value was refused learns it."""
    monkeypatch.setattr("integrations.store.check_storable", lambda event: None)
    bad = "18\x0050" if store.dialect == "postgresql" else "18\ud80050"
    rows = [[store._item_row(message(i), NOW, None)] for i in ("1", bad, "2")]
    first, refused, last = store._insert_batch(rows)
    assert isinstance(refused, PayloadError)
    assert not isinstance(first, PayloadError) and not isinstance(last, PayloadError)
    assert sorted(i.provider_id for i in store.list_items()) == ["1", "2"]


def test_a_record_set_aside_twice_is_one_dead_letter(store: Store) -> None:
    """A mover that died after setting a record aside, before noting its progress, sets it
    aside again on the next pass: still one dead letter, with the bytes as they were."""
    key = ("intake", "123-abcd-00000001.journal", "record:7")
    raw = b'{"type": "message", "message_id": "1\\ud800"}\xff'
    assert store.set_aside(key, raw, "the store cannot take it: lone surrogate", NOW)
    assert not store.set_aside(key, raw, "the store cannot take it: lone surrogate", NOW)
    (dead,) = store.dead_letters()
    item = store.get_item(dead.item_id)
    assert item is not None and item.status == ItemStatus.DEAD
    assert base64.b64decode(item.payload["raw_base64"]) == raw
    assert store.count_items()[ItemStatus.DEAD] == 1
