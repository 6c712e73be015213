"""TEST DOUBLES, hand-written: stand-ins for a helpdesk, for the pipeline's tests.

`RecordingHelpdesk` is not Zendesk or Salesforce: it implements deskbridge's helpdesk
interface and records every write to a JSON-lines file (so a test can read what a killed
worker process wrote). It can fail on demand, hang before or after a write (so a test can
kill the process there), and it measures how many writes of one customer overlap in time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from integrations.events import SocialUser
from integrations.helpdesk import (
    DeletionNotice,
    HelpdeskComment,
    HelpdeskUser,
    NewComment,
    NewTicket,
    Ticket,
    WriteResult,
)


class RecordingHelpdesk:
    """A recording stand-in for a helpdesk (test double; not a real provider)."""

    def __init__(
        self, name: str, path: Path, *, hang: str | None = None, write_seconds: float = 0.0,
        failures: list[Exception] | None = None, on_write: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.hang = hang  # "before" or "after" the write is recorded
        self.write_seconds = write_seconds
        self.failures = list(failures or [])
        self.on_write = on_write
        self._lock = threading.Lock()
        self.tickets: dict[str, Ticket] = {}  # tickets that exist before the test: seed them
        self.users: dict[str, HelpdeskUser] = {}  # X user id → the helpdesk user known for it
        self.comments: dict[str, HelpdeskComment] = {}  # agents' comments, by id: seed them
        self.comment_reads = 0
        self._in_flight: dict[str, int] = defaultdict(int)
        self.max_overlap: dict[str, int] = defaultdict(int)

    # ------------------------------------------------------------ reading the record

    def writes(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def get_ticket(self, ticket_id: str) -> Ticket | None:
        if ticket_id in self.tickets:
            return self.tickets[ticket_id]
        created = [w for w in self.writes() if w["op"] == "create_ticket"]
        match = next((w for w in created if w["ticket_id"] == ticket_id), None)
        if match is None:
            return None
        return Ticket(ticket_id, "open", f"user-{match['author_id']}",
                      requester_social_ids=(match["author_id"],))

    def add_agent_comment(self, ticket_id: str, comment_id: str, body: str, *,
                          public: bool = True, role: str = "agent") -> HelpdeskComment:
        """Seed a comment as an agent (or `role`) wrote it on a ticket; returns it."""
        comment = HelpdeskComment(comment_id, ticket_id, body, public, f"user-{role}", role)
        self.comments[comment_id] = comment
        return comment

    def get_comment(self, ticket_id: str, comment_id: str) -> HelpdeskComment | None:
        self.comment_reads += 1
        comment = self.comments.get(comment_id)
        return comment if comment is not None and comment.ticket_id == ticket_id else None

    def find_user(self, author: SocialUser) -> HelpdeskUser | None:
        # Like a helpdesk that stored the X user id on the requester it created.
        if author.user_id in self.users:
            return self.users[author.user_id]
        created = any(w["op"] == "create_ticket" and w["author_id"] == author.user_id
                      for w in self.writes())
        return HelpdeskUser(f"user-{author.user_id}") if created else None

    def open_tickets(self, user_id: str) -> list[Ticket]:
        created = {w["ticket_id"] for w in self.writes() if w["op"] == "create_ticket"}
        every = [*self.tickets.values(), *(t for i in sorted(created)
                                           if (t := self.get_ticket(i)) is not None)]
        return [t for t in every if t.requester_id == user_id and not t.is_closed]

    def find_write(self, idempotency_key: str, ticket_id: str | None = None) -> WriteResult | None:
        match = next((w for w in self.writes() if w["key"] == idempotency_key), None)
        return WriteResult(match["ticket_id"], match["provider_id"]) if match else None

    # ------------------------------------------------------------ writing

    def create_ticket(self, request: NewTicket, idempotency_key: str) -> WriteResult:
        return self._write("create_ticket", idempotency_key, request.message.author.user_id,
                           request.message.message_id, None,
                           {"follow_up_of": request.follow_up_of, "verified": request.verified,
                            "public": request.public})

    def add_comment(self, request: NewComment, idempotency_key: str) -> WriteResult:
        return self._write("comment", idempotency_key, request.message.author.user_id,
                           request.message.message_id, request.ticket_id,
                           {"public": request.public, "verified": request.verified})

    def record_deletion(self, request: DeletionNotice, idempotency_key: str) -> WriteResult:
        return self._write("deletion_note", idempotency_key, request.deletion.author_id,
                           request.deletion.message_id, request.ticket_id)

    def _write(self, op: str, key: str, author_id: str, message_id: str,
               ticket_id: str | None, details: dict[str, Any] | None = None) -> WriteResult:
        with self._lock:
            self._in_flight[author_id] += 1
            self.max_overlap[author_id] = max(self.max_overlap[author_id],
                                              self._in_flight[author_id])
        try:
            if self.failures:
                raise self.failures.pop(0)
            if self.hang == "before":
                self._hang()
            time.sleep(self.write_seconds)
            with self._lock:
                number = len(self.writes()) + 1
                ticket = ticket_id or str(1000 + number)
                result = WriteResult(ticket, f"{op}-{number}")
                self._append({"op": op, "key": key, "author_id": author_id,
                              "message_id": message_id, "ticket_id": ticket,
                              "provider_id": result.provider_id, "pid": os.getpid(),
                              **(details or {})})
            if self.on_write:
                self.on_write()
            if self.hang == "after":
                self._hang()
            return result
        finally:
            with self._lock:
                self._in_flight[author_id] -= 1

    @property
    def hang_marker(self) -> Path:
        return self.path.with_suffix(".hanging")

    def _hang(self) -> None:
        # Say where we are, then wait for the test to kill this process.
        self.hang_marker.write_text(str(os.getpid()))
        time.sleep(3600)

    def _append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())




class RecordingChannel:
    """A recording stand-in for a social channel (test double; not X).

    Sends are kept in `sent`; `lose_next_answer` makes the next send happen but raise as if
    the answer was lost on the way back (the unknown outcome a retry must reconcile).
    """

    kind = "x"

    def __init__(self, name: str = "acme_x", account: str = "1000") -> None:
        self.name, self.account = name, account
        self.sent: list[dict[str, str]] = []
        self.lose_next_answer = False

    def fit_reply(self, text: str, mode: str, link: str | None) -> list[str]:
        from integrations.twitter.text import split_thread, truncate_with_link

        return [truncate_with_link(text, link)] if mode == "truncate" and link else \
            split_thread(text)

    def send_reply(self, in_reply_to_id: str, text: str) -> str:
        return self._send({"op": "reply", "to": in_reply_to_id, "text": text})

    def send_dm(self, recipient_id: str, text: str) -> str:
        return self._send({"op": "dm", "to": recipient_id, "text": text})

    def find_reply(self, in_reply_to_id: str, text: str) -> str | None:
        return self._find("reply", in_reply_to_id, text)

    def find_dm(self, recipient_id: str, text: str) -> str | None:
        return self._find("dm", recipient_id, text)

    def _send(self, record: dict[str, str]) -> str:
        record["id"] = str(1_900_000_000_000_000_000 + len(self.sent))
        self.sent.append(record)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ConnectionError("connection reset after the request was sent")
        return record["id"]

    def _find(self, op: str, to: str, text: str) -> str | None:
        return next((r["id"] for r in self.sent
                     if (r["op"], r["to"], r["text"]) == (op, to, text)), None)


class TextRecordingHelpdesk(RecordingHelpdesk):
    """`RecordingHelpdesk` that also records each write's text and reason (test double)."""

    def create_ticket(self, request: NewTicket, idempotency_key: str) -> WriteResult:
        return self._write("create_ticket", idempotency_key, request.message.author.user_id,
                           request.message.message_id, None,
                           {"text": request.message.text, "reason": request.reason})

    def add_comment(self, request: NewComment, idempotency_key: str) -> WriteResult:
        return self._write("comment", idempotency_key, request.message.author.user_id,
                           request.message.message_id, request.ticket_id,
                           {"text": request.message.text, "reason": request.reason})
