"""Structured logs: one line per event, as text or JSON, with every known secret redacted.

Call sites log a short message and put the facts in `extra` (`key`, `item_id`, `event`, ...);
both formats print those fields. The redaction is a last line of defence: secrets are kept out
of messages in the first place, and any configured secret that still slips into a line is
replaced before the line is written.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from integrations.batching import Batcher
from integrations.config import REDACTED

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra` fields a call site attached to a log record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(record_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in record_fields(record).items())
        text = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{text} {fields}" if fields else text
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter and replaces every secret in what it writes."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self.secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by a marker."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class BackgroundHandler(logging.Handler):
    """Formats and writes records on a thread of its own, all waiting lines in one write.

    A request thread only appends the record to a list (see `integrations.batching`);
    formatting, redaction and the write happen beside it, at most `linger` seconds later.
    `flush()` waits until everything logged so far is written; at exit (and on `close()`)
    what is waiting is written. Safe across fork: a forked process starts its own thread.
    """

    def __init__(self, stream: IO[str], formatter: logging.Formatter, linger: float = 0.05) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(formatter)
        self._batcher: Batcher[logging.LogRecord] = Batcher(self._write, linger=linger,
                                                             name="deskbridge-log")

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None  # fix the text now, not later
        self._batcher.put(record)

    def flush(self) -> None:
        self._batcher.flush()

    def close(self) -> None:
        self._batcher.close()
        super().close()

    def _write(self, records: list[logging.LogRecord]) -> None:
        lines = [self.format(r) for r in records]
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream: nothing left to write to
            pass


def configure_logging(
    level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send deskbridge's (and huey's, gunicorn's) logs to `stream` in the chosen format."""
    inner = JsonFormatter() if fmt == "json" else TextFormatter()
    handler = BackgroundHandler(stream or sys.stderr, RedactingFormatter(inner, secrets))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_deskbridge", False)]:
        root.removeHandler(old)
        old.close()
    handler._deskbridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler


@dataclass(frozen=True)
class Admission:
    """What a `LogThrottle` says of one line: write it or not, and what to report first."""

    write: bool
    suppressed: int = 0  # lines of this kind left out in its previous window


@dataclass
class _Window:
    opened: float
    written: int = 0
    suppressed: int = 0


class LogThrottle:
    """Let at most `burst` lines of each kind through per `interval` seconds.

    A flood (an attacker's, or a sender with a wrong secret retrying) then costs a bounded
    number of lines per kind and interval, plus one count of what was left out, reported
    when the kind's next line opens a new window. `clock` returns seconds (monotonic).
    Kinds are the caller's keys; past `max_kinds` of them, new kinds share one window.
    """

    OVERFLOW = ("<other>",)

    def __init__(self, burst: int = 10, interval: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 1000) -> None:
        self.burst, self.interval, self.clock, self.max_kinds = burst, interval, clock, max_kinds
        self._windows: dict[Hashable, _Window] = {}
        self._lock = threading.Lock()

    def admit(self, kind: Hashable) -> Admission:
        """Return whether a line of this kind is written now, and the count to report first."""
        now = self.clock()
        with self._lock:
            if kind not in self._windows and len(self._windows) >= self.max_kinds:
                kind = self.OVERFLOW
            window = self._windows.get(kind)
            if window is None or now - window.opened >= self.interval:
                left_out = window.suppressed if window else 0
                self._windows[kind] = _Window(opened=now, written=1)
                return Admission(write=True, suppressed=left_out)
            if window.written < self.burst:
                window.written += 1
                return Admission(write=True)
            window.suppressed += 1
            return Admission(write=False)
