"""The settings of one X account that deskbridge answers for (a `[channels.<key>]` table)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# X usernames: letters, digits and underscores. The 15-character limit is not checked because
# a few legacy accounts exceed it. https://help.x.com/en/managing-your-account/x-username-rules
_HANDLE_RE = re.compile(r"[A-Za-z0-9_]+")


class XChannelSettings(BaseModel):
    """One X account: who it is and the API credentials deskbridge acts with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["x"]
    account_id: str
    handle: str
    consumer_key: SecretStr
    consumer_secret: SecretStr
    access_token: SecretStr | None = None
    access_token_secret: SecretStr | None = None
    bearer_token: SecretStr | None = None
    api_base_url: str = "https://api.x.com"
    poll: bool = False
    poll_interval_seconds: int = Field(default=60, ge=15)

    @field_validator("account_id", mode="before")
    @classmethod
    def _accept_unquoted_id(cls, value: object) -> object:
        """Accept `account_id = 1234` as well as the string: TOML users often leave ids bare."""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("account_id")
    @classmethod
    def _check_account_id(cls, value: str) -> str:
        """Require the numeric user id; handles change, ids never do.

        Raises:
            ValueError: when the id is not all ASCII digits.
        """
        if not (value.isascii() and value.isdigit()):
            raise ValueError("must be the numeric X user id (digits only), not the handle")
        return value

    @field_validator("handle")
    @classmethod
    def _check_handle(cls, value: str) -> str:
        """Strip a leading @ and require the characters X allows in a username.

        Raises:
            ValueError: when the handle is empty or has characters X does not allow.
        """
        handle = value.removeprefix("@")
        if not _HANDLE_RE.fullmatch(handle):
            raise ValueError("must be an X username: letters, digits and underscores")
        return handle
