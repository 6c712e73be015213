"""The settings of one Salesforce Service Cloud org (a `[helpdesks.<key>]` table)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class SalesforceSettings(BaseModel):
    """One Salesforce org: how deskbridge signs in and which org its Outbound Messages are from.

    The sign-in fields follow simple-salesforce's `Salesforce(...)` arguments:
    https://simple-salesforce.readthedocs.io/en/latest/user_guide/examples.html
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["salesforce"]
    # "login" for production orgs, "test" for sandboxes (login.salesforce.com / test...).
    domain: Literal["login", "test"] = "login"
    instance_url: str | None = None
    username: str
    password: SecretStr
    security_token: SecretStr | None = None
    consumer_key: SecretStr | None = None
    consumer_secret: SecretStr | None = None
    # Outbound Messages carry the sending org's OrganizationId, which should match this.
    organization_id: str | None = None
    api_version: str = Field(default="59.0", pattern=r"^[0-9]+\.[0-9]+$")
    # Overrides the instance URL, to point at a local emulator.
    base_url: str | None = None
