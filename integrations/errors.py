"""The one exception tree of deskbridge.

Every error deskbridge raises on purpose is a `DeskbridgeError`. The web tier maps each
branch to a status code chosen for the sender's retry logic (see `webhook_server`): 4xx for
what a retry cannot fix, 5xx only where a retry should happen.
"""

from __future__ import annotations

from dataclasses import dataclass


class DeskbridgeError(Exception):
    """Root of every error deskbridge raises on purpose."""


class VerificationError(DeskbridgeError):
    """A request's signature, timestamp or origin could not be verified (refused, 401/403)."""


class PayloadError(DeskbridgeError):
    """A request body is malformed or not of a shape we understand (refused, 400)."""


class ConfigurationError(DeskbridgeError):
    """The configuration is invalid, or names something that does not exist."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration file, located as precisely as we can."""

    key: str
    message: str
    source: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = f" ({self.source}" + (f", line {self.line}" if self.line else "") + ")"
        return f"{self.key}: {self.message}{where}"


class ConfigError(ConfigurationError):
    """A configuration file failed to load or validate; `problems` says every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class StoreUnavailable(DeskbridgeError):
    """The store could not be reached or written (503: the sender should retry)."""


class ProviderError(DeskbridgeError):
    """A provider API (X, Zendesk, Salesforce) answered with an error or not at all.

    `status` is the HTTP status (None when there was no answer), `retry_after` the seconds the
    provider asked us to wait (rate limits), and `is_permanent` whether retrying can help.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        permanent: bool | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        if permanent is None:
            permanent = status is not None and 400 <= status < 500 and status not in (408, 409, 429)
        self.is_permanent = permanent
        super().__init__(f"{provider}: {message}" + (f" (HTTP {status})" if status else ""))


class RateLimited(ProviderError):
    """The provider refused for now and said when to come back (HTTP 429 or equivalent)."""

    def __init__(self, provider: str, retry_after: float, message: str = "rate limited") -> None:
        super().__init__(provider, message, status=429, retry_after=retry_after, permanent=False)


class Deferral(DeskbridgeError):
    """Not yet: the item waits for something else to happen first (not a failure)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(reason)
