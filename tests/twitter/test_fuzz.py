"""Fuzzing `/webhooks/x`: recorded real deliveries, fields mutated, signed, POSTed (issue 11).

Each example takes one recorded payload (tests/payloads/x/account_activity, activity_api),
renumbers it (its account becomes the test channel's; every other id, message or user, a
fresh snowflake, so the store never deduplicates it away), dates its messages now, and
sometimes ties it to what earlier examples of the run left in the store: its text cites a
ticket ("ticket 1003", "#12345", "zaaknummer 00041230"), it replies to an earlier post, it
comes from an earlier author or DM sender, or it deletes an earlier post. Then zero to three
of its fields change (a wrong JSON type, a huge or odd value, deep nesting, a lone surrogate,
NUL, odd Unicode digits, a very long string, the field removed); it is signed with X's
algorithm and the channel's consumer secret and POSTed through the Flask test client.
What must hold for every one:
- never a 5xx, never a traceback in the body; a 4xx has a JSON `reason`;
- a 2xx stored every event it carried (after the intake's flush), and processing each of
  them with the pipeline (against the recording helpdesk double) ends it done or dead with a
  reason, never "retry": the doubles simulate no outage, so nothing here is transient;
- a processed deletion blanks the text of the post it deletes.

`DESKBRIDGE_FUZZ_EXAMPLES=2000` runs longer; the normal run is bounded to stay fast. With
`-s` the last test prints one JSON line of counts (bodies, answers, pipeline outcomes).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from integrations.config import parse_settings
from integrations.errors import PayloadError
from integrations.events import Deletion, MessageKind, SocialMessage
from integrations.runtime import Runtime
from integrations.store import ItemStatus
from integrations.twitter.webhooks import ACTIVITY_EVENTS, SNOWFLAKE_EPOCH_MS, parse_delivery, sign
from tests.conftest import SETTINGS_TEMPLATE
from tests.doubles import RecordingHelpdesk
from webhook_server import create_app

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "x"
ACCOUNT = "1000"  # the X channel of tests/conftest.py's SETTINGS_TEMPLATE
SECRET = "cs-test-secret-value"
EXAMPLES = int(os.environ.get("DESKBRIDGE_FUZZ_EXAMPLES", "60"))

# Values JSON cannot carry through `json.dumps` (a 5,000-digit integer is past Python's
# int-to-text limit; 2,000 levels would hit the recursion limit): placed as markers, spliced
# into the encoded body.
BIG_INT, DEEP = "\x00BIG", "\x00DEEP"
SPLICES = {json.dumps(BIG_INT).encode(): b"7" * 5000,
           json.dumps(DEEP).encode(): b"[" * 2000 + b"]" * 2000}

ODD_STRINGS = ["", "١٢", "²", "1\ud800", "\ud800", "\udfff1", "12\x00", "\x00", "abc", "-1",
               "1e3", " 12", "0x1f", "9" * 21, "9" * 400, "𝟙𝟚", "\u202e12", "x" * 120_000,
               "sha256=", "message_create", "post.mention.create"]
HOSTILE: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.sampled_from(ODD_STRINGS), st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**19, 2**64, -(2**63), 10**400, 0]),
    st.floats(allow_nan=False), st.just([]), st.just({}), st.just(["x"]),
    st.just({"id": "1"}), st.sampled_from([BIG_INT, DEEP]),
)
REMOVE = object()

# How customers cite a ticket (integrations/references.py), and one number that is not one.
CITATIONS = ["ticket {n}", "see #{n}", "zaaknummer {n:0>8}", "Ticket-Nr. {n}", "re case: {n}",
             "tickets {n} and {m}", "https://acme.zendesk.com/hc/nl/requests/{n}",
             "order {n}", "[#{n}] still broken"]
CITED_NUMBERS = [48012, 12345, 41230, 1, 99_999_999]
SCENARIOS = ["plain", "cites", "reply", "same_author", "same_dm_sender", "delete_processed"]


@dataclass(frozen=True)
class Recorded:
    """One recorded delivery, with the id of the account it was recorded for."""

    name: str
    body: dict[str, Any]
    account: str | None

    def __repr__(self) -> str:  # a failing plan names its recording, not the whole body
        return f"Recorded({self.name!r})"

    @property
    def carries(self) -> set[str]:
        """Return which kinds of message object it holds ("post", "dm", "delete")."""
        return {_family(kind) for kind, _obj in _messages(self.body)}


def _recorded() -> list[Recorded]:
    found = []
    for path in sorted([*PAYLOADS.glob("account_activity/*.json"),
                        *PAYLOADS.glob("activity_api/*.json")]):
        body = json.loads(path.read_bytes())
        data = body.get("data")
        filter_ = data.get("filter") if isinstance(data, dict) else None
        user_id = filter_.get("user_id") if isinstance(filter_, dict) else None
        found.append(Recorded(path.name, body, body.get("for_user_id") or user_id))
    return found


# ---------------------------------------------------------------- where the messages are


def _messages(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Return the message objects of a well-formed delivery, each with its shape."""
    if "for_user_id" in body:
        return [*(("v1", t) for t in body.get("tweet_create_events", [])),
                *(("dm", d) for d in body.get("direct_message_events", [])
                  if d.get("type") == "message_create"),
                *(("delete_v1", d) for d in body.get("tweet_delete_events", []))]
    data = body.get("data", {})
    carried = ACTIVITY_EVENTS.get(data.get("event_type", "")) if isinstance(data, dict) else None
    payload = data.get("payload", {}) if carried else {}
    if carried == "dm":
        return [("dm", d) for d in payload.get("direct_message_events", [])
                if d.get("type") == "message_create"]
    return [("delete_v2" if carried == "delete" else "v2", payload)] if carried else []


def _family(kind: str) -> str:
    return "delete" if kind.startswith("delete") else "dm" if kind == "dm" else "post"


def _author(kind: str, obj: dict[str, Any]) -> str | None:
    """Return the id of who wrote a message object (in the ids it carries now)."""
    found = (obj.get("user", {}).get("id_str") if kind == "v1"
             else obj.get("message_create", {}).get("sender_id") if kind == "dm"
             else obj.get("author_id") if kind == "v2" else None)
    return str(found) if found else None


# ---------------------------------------------------------------- fresh ids and times

# X ids are snowflakes: milliseconds since X's epoch above 22 bits of worker and sequence.
# A run counter in those low bits makes every id new and keeps it a 19-digit id of "now".
# https://docs.x.com/resources/fundamentals/x-ids
SEQUENCE = itertools.count(1)
ID_KEY = re.compile(r"(?:^|_)ids?(?:_str)?$")  # id, id_str, sender_id, edit_history_tweet_ids
MIN_ID_DIGITS = 4  # shorter numbers under an id key are counts or positions, left alone


class RunClock:
    """The wall clock, moved on by the test when an item waits for its parent."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def fresh_snowflake(now: datetime) -> str:
    """Return an X id never handed out before in this run, made at `now`."""
    millis = int(now.timestamp() * 1000) - SNOWFLAKE_EPOCH_MS
    return str((millis << 22) + next(SEQUENCE))


def _renumber(node: Any, table: dict[str, str], new: Callable[[], str], key: str = "") -> Any:
    """Return `node` with every id replaced through `table` (a new id for one not in it),
    so ids that name one thing in the recording name one new thing in the copy."""
    if isinstance(node, dict):
        return {(_new_id(k, table, new) if _is_id(k) else k): _renumber(v, table, new, k)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_renumber(v, table, new, key) for v in node]
    if key == "event_uuid":
        return new()
    if not ID_KEY.search(key):
        return node
    if isinstance(node, int) and not isinstance(node, bool) and _is_id(str(node)):
        return int(_new_id(str(node), table, new))
    if isinstance(node, str) and all(_is_id(p) for p in re.split("[-:]", node)):
        # DM conversations are "id-id" (v1/v2) or "id:id" (X Chat): each part renumbered.
        return re.sub(r"\d+", lambda m: _new_id(m.group(), table, new), node)
    return node


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) >= MIN_ID_DIGITS


def _new_id(old: str, table: dict[str, str], new: Callable[[], str]) -> str:
    if old not in table:
        table[old] = new()
    return table[old]


def _retime(kind: str, obj: dict[str, Any], now: datetime) -> None:
    """Date a message object `now`, in the format its shape uses, where it carries a time."""
    millis = str(int(now.timestamp() * 1000))
    stamps = {"v1": {"timestamp_ms": millis,
                     "created_at": now.strftime("%a %b %d %H:%M:%S +0000 %Y")},
              "dm": {"created_timestamp": millis}, "delete_v1": {"timestamp_ms": millis},
              "v2": {"created_at": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}}
    for key, value in stamps.get(kind, {}).items():
        if key in obj:
            obj[key] = value


# ---------------------------------------------------------------- ties to earlier examples


@dataclass
class Seen:
    """What earlier examples of this run left processed in the store."""

    posts: list[SocialMessage] = field(default_factory=list)  # known authors, not ours
    dm_senders: list[str] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)

    def learn(self, event: SocialMessage | Deletion) -> None:
        """Remember a processed event that later examples can answer, repeat or delete."""
        if isinstance(event, Deletion):
            self.deleted.add(event.message_id)
        elif event.author.is_known and not event.is_own:
            if event.kind == MessageKind.DM:
                self.dm_senders.append(event.author.user_id)
            else:
                self.posts.append(event)

    def deletable(self) -> list[SocialMessage]:
        """Return the processed posts no example has deleted yet."""
        return [p for p in self.posts if p.message_id not in self.deleted]


def _reply_to(kind: str, obj: dict[str, Any], parent: SocialMessage) -> None:
    """Make a post object a reply to `parent`, as X writes one in that shape."""
    if kind == "v1":
        obj.update(in_reply_to_status_id=int(parent.message_id),
                   in_reply_to_status_id_str=parent.message_id,
                   in_reply_to_user_id=int(parent.author.user_id),
                   in_reply_to_user_id_str=parent.author.user_id,
                   in_reply_to_screen_name=parent.author.handle)
    elif kind == "v2":
        others = [r for r in obj.get("referenced_tweets", []) if r.get("type") != "replied_to"]
        obj.update(referenced_tweets=[*others, {"type": "replied_to", "id": parent.message_id}],
                   in_reply_to_user_id=parent.author.user_id,
                   conversation_id=parent.conversation_id or parent.message_id)


def _delete_of(kind: str, obj: dict[str, Any], post: SocialMessage) -> None:
    """Make a delete object say that `post`'s author deleted it."""
    if kind == "delete_v1":
        obj["status"] = {"id": post.message_id, "user_id": post.author.user_id}
    elif kind == "delete_v2":
        obj.update(id=post.message_id, author_id=post.author.user_id)


def _cite(kind: str, obj: dict[str, Any], phrase: str) -> None:
    """Add `phrase` to every text a message object carries (the full text wins in parsing)."""
    holders = {"v1": [obj, obj.get("extended_tweet")], "v2": [obj, obj.get("note_tweet")],
               "dm": [obj.get("message_create", {}).get("message_data")]}
    for holder in holders.get(kind, []):
        for key in ("text", "full_text"):
            if isinstance(holder, dict) and isinstance(holder.get(key), str):
                holder[key] = f"{holder[key]} {phrase}"


# ---------------------------------------------------------------- one example's body


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _apply(body: Any, path: tuple[Any, ...], value: Any) -> None:
    node = body
    for step in path[:-1]:
        node = node[step]
    if value is REMOVE:
        if isinstance(node, dict):
            node.pop(path[-1], None)
        else:
            node.pop(path[-1])
    else:
        node[path[-1]] = value


RECORDED = _recorded()


PICK = st.integers(0, 2**32 - 1)  # which earlier post, path…: taken modulo what there is


@dataclass(frozen=True)
class Plan:
    """What one example does, drawn before it meets the run's history (so Hypothesis draws
    the same things whatever the store holds): each pick is taken modulo the choices."""

    scenario: str
    recorded: Recorded
    pick: int
    citation: str
    cited: int
    changes: tuple[tuple[int, Any], ...]
    ascii: bool


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """Draw a scenario, a recorded delivery fit for it, and zero to three field changes."""
    scenario = draw(st.sampled_from(SCENARIOS))
    wanted = {"same_dm_sender": {"dm"}, "delete_processed": {"delete"}, "reply": {"post"},
              "same_author": {"post"}, "cites": {"post", "dm"}}.get(scenario)
    fits = [r for r in RECORDED if wanted is None or wanted & r.carries]
    changes = draw(st.lists(st.tuples(PICK, st.one_of(st.just(REMOVE), HOSTILE)), max_size=3))
    return Plan(scenario, draw(st.sampled_from(fits)), draw(PICK),
                draw(st.sampled_from(CITATIONS)), draw(PICK), tuple(changes), draw(st.booleans()))


def _chosen(choices: list[Any], pick: int) -> Any:
    return choices[pick % len(choices)] if choices else None


def _fresh_body(plan: Plan, seen: Seen, tickets: list[str], now: datetime) -> dict[str, Any]:
    """Return the plan's recorded delivery renumbered, dated now and tied to what `seen`
    holds; still well formed (the hostile changes come after)."""
    recorded = plan.recorded
    table = {recorded.account: ACCOUNT} if recorded.account else {}
    earlier = _earlier_author(plan, seen)
    for kind, obj in _messages(recorded.body):
        author = _author(kind, obj)
        if earlier and author and author != recorded.account:
            table.setdefault(author, earlier)
    body: dict[str, Any] = _renumber(recorded.body, table, lambda: fresh_snowflake(now))
    for kind, obj in _messages(body):
        _retime(kind, obj, now)
        _tie(plan, kind, obj, seen, tickets)
    return body


def _earlier_author(plan: Plan, seen: Seen) -> str | None:
    if plan.scenario == "same_author" and seen.posts:
        return str(_chosen(seen.posts, plan.pick).author.user_id)
    if plan.scenario == "same_dm_sender":
        return str(_chosen(seen.dm_senders, plan.pick) or "") or None
    return None


def _tie(plan: Plan, kind: str, obj: dict[str, Any], seen: Seen, tickets: list[str]) -> None:
    """Tie one message object to the run's history as the plan's scenario says."""
    if plan.scenario == "reply" and seen.posts:
        _reply_to(kind, obj, _chosen(seen.posts, plan.pick))
    elif plan.scenario == "delete_processed" and seen.deletable():
        _delete_of(kind, obj, _chosen(seen.deletable(), plan.pick))
    elif plan.scenario == "cites":
        # Half the time a ticket the run opened (when there is one), else a made-up number.
        numbers = tickets if tickets and plan.cited % 2 else CITED_NUMBERS
        number = _chosen(numbers, plan.cited // 2)
        _cite(kind, obj, plan.citation.format(n=number, m=CITED_NUMBERS[0]))


def _mutated(plan: Plan, body: dict[str, Any]) -> bytes:
    """Apply the plan's field changes to `body`; return it encoded as JSON."""
    for pick, value in plan.changes:
        path = _chosen(list(_paths(body)), pick)
        if path is None:
            break
        # A fresh copy: `st.just` hands out one object, and a shared one could nest in itself.
        _apply(body, path, value if value is REMOVE else json.loads(json.dumps(value)))
    if plan.ascii:
        encoded = json.dumps(body).encode()  # ASCII, lone surrogates escaped as X's JSON would
    else:  # raw UTF-8 (a lone surrogate becomes bytes no UTF-8 reader takes)
        encoded = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for marker, replacement in SPLICES.items():
        encoded = encoded.replace(marker, replacement)
    return encoded


# ---------------------------------------------------------------- the world and the run


@dataclass
class World:
    runtime: Runtime
    client: FlaskClient
    helpdesk: RecordingHelpdesk
    clock: RunClock
    seen: Seen = field(default_factory=Seen)

    def tickets(self) -> list[str]:
        """Return the tickets the run has opened so far (the ones a customer can cite)."""
        return sorted({w["ticket_id"] for w in self.helpdesk.writes()
                       if w["op"] == "create_ticket"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("fuzz")
    text = SETTINGS_TEMPLATE.format(store_url=f"sqlite:///{tmp}/store.db",
                                    queue_url=f"sqlite:///{tmp}/queue.db",
                                    queue_name="fuzz", queue_extra="")
    helpdesk = RecordingHelpdesk("hd", tmp / "writes.jsonl")
    clock = RunClock()
    runtime = Runtime(parse_settings(text, environ={}), helpdesks={"hd": helpdesk},
                      clock=clock, rng=random.Random(11))
    runtime.upgrade_schema()
    yield World(runtime, create_app(runtime.settings, runtime=runtime).test_client(),
                helpdesk, clock)
    runtime.close()


TRIED: set[bytes] = set()
FIVE_XX: list[bytes] = []
COUNTS: dict[str, Counter[str]] = {name: Counter() for name in (
    "statuses", "outcomes", "rules", "scenarios", "deliveries")}
WAITS = ("deferred", "busy", "waiting")  # not settled yet: its parent, or its time, is due


def _carried(body: bytes, now: datetime) -> list[SocialMessage | Deletion]:
    try:
        events = parse_delivery(body, now).events
    except PayloadError:
        return []
    return [e for e in events if isinstance(e, (SocialMessage, Deletion))]


def _process_all(world: World, events: list[SocialMessage | Deletion]) -> list[str]:
    """Process every stored event once (again, later, for one that waited for its parent);
    check each ended done or dead with a reason; return the outcomes."""
    store = world.runtime.store
    items = []
    for event in events:
        item = store.find_item(*event.natural_key)
        assert item is not None, f"acknowledged but not stored: {event.natural_key}"
        items.append(item.id)
    outcomes = {item_id: world.runtime.pipeline.process(item_id) for item_id in items}
    for _round in range(3):
        waiting = [i for i, outcome in outcomes.items() if outcome in WAITS]
        world.clock.offset += timedelta(minutes=1)
        outcomes |= {i: world.runtime.pipeline.process(i) for i in waiting}
    for event, item_id in zip(events, items, strict=True):
        _check_settled(world, event, item_id, outcomes[item_id])
    return [outcomes[i] for i in items]


def _check_settled(world: World, event: SocialMessage | Deletion, item_id: int,
                   outcome: str) -> None:
    store = world.runtime.store
    after = store.get_item(item_id)
    assert after is not None
    COUNTS["outcomes"][outcome] += 1
    assert outcome != "retry", f"{event.natural_key}: {after}"
    assert after.status in ItemStatus.FINISHED, (event.natural_key, outcome, after)
    reason = after.last_error if after.status == ItemStatus.DEAD else after.outcome
    assert reason, f"{after.status} without a reason: {after}"
    COUNTS["rules"][_rule(after.status, reason)] += 1
    if after.status == ItemStatus.DONE and outcome != "skipped":
        world.seen.learn(event)
    if isinstance(event, Deletion) and after.status == ItemStatus.DONE:
        deleted = store.find_item(event.channel, event.account, event.message_id)
        assert deleted is None or deleted.payload.get("text") == "", deleted


def _rule(status: str, reason: str) -> str:
    """Return which link rule (or which other end) an item's reason names."""
    if status == ItemStatus.DEAD:
        return "dead"
    found = re.search(r"\((\w+): ", reason)
    return found.group(1) if found else reason.split(":")[0]


def _post(world: World, body: bytes) -> tuple[int, Any]:
    response = world.client.post("/webhooks/x", data=body, headers={
        "Content-Type": "application/json", "X-Twitter-Webhooks-Signature": sign(SECRET, body)})
    COUNTS["statuses"][str(response.status_code)] += 1
    if response.status_code >= 500:
        FIVE_XX.append(body)
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert b"Traceback" not in response.get_data()
    if response.status_code >= 400:
        reply = response.get_json(silent=True)
        assert isinstance(reply, dict) and reply.get("reason"), response.get_data()[:300]
    return response.status_code, response.get_json(silent=True)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(plan=plans())
def test_a_mutated_signed_delivery_is_never_a_5xx_and_never_stuck(
        world: World, plan: Plan) -> None:
    COUNTS["scenarios"][plan.scenario] += 1
    now = world.clock()
    body = _mutated(plan, _fresh_body(plan, world.seen, world.tickets(), now))
    note(f"body: {body[:4000]!r}")
    TRIED.add(body)
    status, reply = _post(world, body)
    if status >= 400:
        return
    assert world.runtime.intake.flush()
    events = _carried(body, now) if reply.get("received") else []
    outcomes = _process_all(world, events)
    COUNTS["deliveries"]["2xx with events" if events else "2xx without events"] += 1
    if any(outcome != "skipped" for outcome in outcomes):
        COUNTS["deliveries"]["2xx with new items"] += 1


def test_the_fuzz_run_reached_the_pipeline_with_new_items(world: World) -> None:
    # Runs after the property above (file order): one JSON line of counts, for the report.
    outcomes = COUNTS["outcomes"]
    summary = {
        "examples": EXAMPLES, "distinct_bodies": len(TRIED), "five_xx": len(FIVE_XX),
        "statuses": dict(sorted(COUNTS["statuses"].items())),
        "pipeline": {"done": outcomes["done"], "dead": outcomes["dead"],
                     "other": {k: v for k, v in outcomes.items() if k not in ("done", "dead")}},
        "deliveries": dict(COUNTS["deliveries"]), "scenarios": dict(COUNTS["scenarios"]),
        "link_rules": dict(COUNTS["rules"].most_common()),
        "tickets_opened": len(world.tickets()),
    }
    print("\nX webhook fuzz: " + json.dumps(summary, sort_keys=True))
    assert len(TRIED) >= min(EXAMPLES, 20) // 2 and not FIVE_XX
    carried = COUNTS["deliveries"]["2xx with events"]
    # Fresh ids: nearly every accepted delivery is new work, not a duplicate the store drops.
    assert COUNTS["deliveries"]["2xx with new items"] >= 0.9 * carried, summary
