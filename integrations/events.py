"""Normalised events: what flows through deskbridge, whatever the provider.

Every provider module turns its payloads into these frozen dataclasses and keeps the raw
payload beside them. The vocabulary of kinds is closed: a kind a provider adds tomorrow
becomes `MessageKind.UNKNOWN`, never a crash.

Each event has a natural key `(channel, account, provider_id)`; the inbox stores an event
once per key. Its conversation key says which events must never be processed at the same
time (one customer of one account, or one ticket).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from integrations import jsontext
from integrations.errors import PayloadError


class MessageKind(enum.StrEnum):
    """What a social message is, in the closed vocabulary of DESIGN.md."""

    MENTION = "mention"
    REPLY = "reply"
    QUOTE = "quote"
    RETWEET = "retweet"
    DM = "dm"
    DELETE = "delete"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SocialUser:
    """A person on a social channel, by the id that never changes (handles do)."""

    channel: str
    user_id: str
    handle: str
    display_name: str = ""
    follower_count: int | None = None
    profile_url: str | None = None

    @property
    def is_known(self) -> bool:
        """Say whether the provider told us who this is: X leaves a post's author out unless
        the request asks for it, and such a post is kept with `user_id` "" (never linked by
        identity, never answered)."""
        return bool(self.user_id)


@dataclass(frozen=True)
class SocialMessage:
    """One message from a social channel: a post, a reply, a quote, a DM."""

    channel: str
    account: str
    message_id: str
    kind: MessageKind
    author: SocialUser
    text: str
    created_at: datetime
    in_reply_to_id: str | None = None
    conversation_id: str | None = None
    expanded_urls: tuple[str, ...] = ()
    media_urls: tuple[str, ...] = ()
    permalink: str | None = None
    language: str | None = None
    is_own: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        _require_aware(self.created_at, "created_at")

    @property
    def natural_key(self) -> tuple[str, str, str]:
        return (self.channel, self.account, self.message_id)

    @property
    def conversation_key(self) -> str:
        return f"{self.channel}:{self.account}:{self.author.user_id}"


@dataclass(frozen=True)
class AgentReply:
    """An agent's answer written on a helpdesk ticket, to be sent back to the customer."""

    helpdesk: str
    ticket_id: str
    comment_id: str
    text: str
    public: bool
    created_at: datetime
    author_name: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        _require_aware(self.created_at, "created_at")

    @property
    def natural_key(self) -> tuple[str, str, str]:
        return ("helpdesk", self.helpdesk, f"comment:{self.comment_id}")

    @property
    def conversation_key(self) -> str:
        return f"helpdesk:{self.helpdesk}:{self.ticket_id}"


@dataclass(frozen=True)
class Deletion:
    """A customer deleted a message we may have copied to a ticket; we must honour it."""

    channel: str
    account: str
    message_id: str
    author_id: str
    deleted_at: datetime
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        _require_aware(self.deleted_at, "deleted_at")

    @property
    def natural_key(self) -> tuple[str, str, str]:
        return (self.channel, self.account, f"delete:{self.message_id}")

    @property
    def conversation_key(self) -> str:
        return f"{self.channel}:{self.account}:{self.author_id}"


Event: TypeAlias = SocialMessage | AgentReply | Deletion

EVENT_TYPES: dict[str, type[SocialMessage | AgentReply | Deletion]] = {
    "message": SocialMessage,
    "agent_reply": AgentReply,
    "deletion": Deletion,
}
_TYPE_NAMES = {cls: name for name, cls in EVENT_TYPES.items()}


def distinct_events(events: tuple[Event, ...]) -> tuple[Event, ...]:
    """Return `events` without repeats of a natural key (the first of each kept)."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for event in events:
        if event.natural_key not in seen:
            seen.add(event.natural_key)
            kept.append(event)
    return tuple(kept) if len(kept) < len(events) else events


def event_type_name(event: Event) -> str:
    """The stable name under which an event's type is stored ("message", ...)."""
    return _TYPE_NAMES[type(event)]


def to_record(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of an event, tagged with its type, that `from_record` reads back."""
    record: dict[str, Any] = {"type": event_type_name(event)}
    for f in dataclasses.fields(event):
        record[f.name] = _encode(getattr(event, f.name))
    return record


def event_json(event: Event) -> str:
    """`to_record` as JSON text, as the store keeps it."""
    return jsontext.dumps_text(to_record(event))


def event_json_bytes(event: Event) -> bytes:
    """`event_json` as UTF-8 bytes (as the intake journal keeps it)."""
    return jsontext.dumps(to_record(event))


def from_record(record: Mapping[str, Any]) -> Event:
    """Rebuild an event from `to_record`'s dict.

    Raises PayloadError if the record is not of a known type or shape.
    """
    try:
        cls = EVENT_TYPES[record["type"]]
        values = {f.name: _decode(f.name, record[f.name]) for f in dataclasses.fields(cls)
                  if f.name in record}
        return cls(**values)
    except (KeyError, TypeError, ValueError) as err:
        raise PayloadError(f"not a stored event record: {err}") from err


_PLAIN = (str, int, float, bool, type(None))
_USER_FIELDS = tuple(f.name for f in dataclasses.fields(SocialUser))


def _encode(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, SocialUser):
        return {name: getattr(value, name) for name in _USER_FIELDS}
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _decode(name: str, value: Any) -> Any:
    if name in ("created_at", "deleted_at"):
        return datetime.fromisoformat(value)
    if name == "kind":
        return MessageKind(value)
    if name == "author" and isinstance(value, Mapping):
        return SocialUser(**value)
    if name in ("expanded_urls", "media_urls"):
        return tuple(value)
    return value


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
