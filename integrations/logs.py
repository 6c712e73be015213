"""Structured logs: one line per event, as text or JSON, with every known secret redacted.

Call sites log a short message and put the facts in `extra` (`key`, `item_id`, `event`, ...);
both formats print those fields. The redaction is a last line of defence: secrets are kept out
of messages in the first place, and any configured secret that still slips into a line is
replaced before the line is written.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
REDACTED = "[redacted]"


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

    A request thread only queues the record; formatting, redaction and the write happen
    beside it. `flush()` waits until everything queued so far is written; at exit (and on
    `close()`) the queue is drained. Safe across fork: a forked process starts its own thread.
    """

    def __init__(self, stream: IO[str], formatter: logging.Formatter) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(formatter)
        self._queue: queue.SimpleQueue[logging.LogRecord | threading.Event | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None  # fix the text now, not later
        self._ensure_thread()
        self._queue.put(record)

    def flush(self) -> None:
        if self._thread is None or self._pid != os.getpid():
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(5)

    def close(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            self._queue.put(None)
            self._thread.join(5)
            self._thread = None
        super().close()

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._write_forever, name="deskbridge-log",
                                            daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _write_forever(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines = [self.format(r) for r in batch if isinstance(r, logging.LogRecord)]
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # a closed stream: nothing left to write to
                    pass
            for marker in batch:
                if isinstance(marker, threading.Event):
                    marker.set()
            if None in batch:
                return


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
