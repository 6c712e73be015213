"""The channel interface: what the pipeline asks of a social channel (X) when answering.

Sends return the provider's id of what was posted. The `find_*` methods answer whether an
identical message already went out, so a retry after an unknown outcome never posts twice.
"""

from __future__ import annotations

from typing import Protocol


class Channel(Protocol):
    """One configured social account."""

    name: str  # the config's name for it (the key of [channels.NAME])
    kind: str  # "x"
    account: str  # the account's user id

    def fit_reply(self, text: str, mode: str, link: str | None) -> list[str]:
        """`text` as the posts of a reply: one, a numbered thread, or truncated with `link`."""
        ...

    def send_reply(self, in_reply_to_id: str, text: str) -> str:
        """Post `text` in reply to a message; returns the new post's id."""
        ...

    def send_dm(self, recipient_id: str, text: str) -> str:
        """Send a direct message; returns its event id."""
        ...

    def find_reply(self, in_reply_to_id: str, text: str) -> str | None:
        """The id of our post with this text in reply to that message, if it exists."""
        ...

    def find_dm(self, recipient_id: str, text: str) -> str | None:
        """The id of our DM with this text to that user, if it exists."""
        ...
