"""The settings of one Zendesk Support account (a `[helpdesks.<key>]` table)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_SUBDOMAIN_RE = re.compile(r"[a-z0-9-]+")


class ZendeskSettings(BaseModel):
    """One Zendesk account: where it is, how deskbridge signs in, how its webhooks are signed.

    Zendesk takes either an API token (with the agent's email) or an OAuth access token:
    https://developer.zendesk.com/api-reference/introduction/security-and-auth/
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["zendesk"]
    subdomain: str
    email: str
    token: SecretStr | None = None
    oauth_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    # Overrides https://<subdomain>.zendesk.com, to point at a local emulator.
    base_url: str | None = None
    requests_per_minute: int = Field(default=700, ge=1)

    @field_validator("subdomain")
    @classmethod
    def _check_subdomain(cls, value: str) -> str:
        """Require the bare subdomain, the commonest mistake being the full host name.

        Raises:
            ValueError: when the value is not lowercase letters, digits and hyphens.
        """
        if not _SUBDOMAIN_RE.fullmatch(value):
            raise ValueError(
                "must be the subdomain only, in lowercase letters, digits and hyphens"
                " (e.g. 'acme' for acme.zendesk.com)"
            )
        return value

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str) -> str:
        """Require something shaped like an address; Zendesk would only answer 401 later.

        Raises:
            ValueError: when the value has no single @ between non-empty parts.
        """
        local, at, domain = value.partition("@")
        if not (local and at and domain) or "@" in domain:
            raise ValueError("must be the email address of the Zendesk agent deskbridge acts as")
        return value

    @model_validator(mode="after")
    def _check_exactly_one_credential(self) -> ZendeskSettings:
        """Require exactly one way to sign in, so nobody wonders which one is used.

        Raises:
            ValueError: when both or neither of `token` and `oauth_token` are set.
        """
        if self.token is not None and self.oauth_token is not None:
            raise ValueError("set exactly one of token or oauth_token, not both")
        if self.token is None and self.oauth_token is None:
            raise ValueError("set exactly one of token (an API token) or oauth_token")
        return self
