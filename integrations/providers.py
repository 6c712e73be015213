"""The explicit registry of providers: adding one is a folder and a line here.

- `CHANNEL_BLUEPRINTS` / `HELPDESK_BLUEPRINTS`: name → factory of the Flask blueprint that
  receives the provider's webhooks (`factory(runtime) -> Blueprint`), mounted by
  `webhook_server.create_app`.
- `HELPDESK_ADAPTERS`: helpdesk `type` in the config → factory of its adapter
  (`factory(name, settings) -> Helpdesk`).
- `CHANNEL_ADAPTERS`: channel `type` → factory of what sends on it
  (`factory(name, settings) -> Channel`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from integrations.twitter.views import create_blueprint as x_blueprint
from integrations.zendesk.views import create_blueprint as zendesk_blueprint

if TYPE_CHECKING:
    from flask import Blueprint

    from integrations.channels import Channel
    from integrations.helpdesk import Helpdesk
    from integrations.runtime import Runtime

BlueprintFactory = Callable[["Runtime"], "Blueprint"]
HelpdeskFactory = Callable[[str, Any], "Helpdesk"]
ChannelFactory = Callable[[str, Any], "Channel"]

CHANNEL_BLUEPRINTS: dict[str, BlueprintFactory] = {"x": x_blueprint}
HELPDESK_BLUEPRINTS: dict[str, BlueprintFactory] = {"zendesk": zendesk_blueprint}
def _x_channel(name: str, settings: Any) -> Channel:
    # Imported when first needed: web workers never send, so they never load tweepy.
    from integrations.twitter.channel import XChannel

    return XChannel(name, settings)


CHANNEL_ADAPTERS: dict[str, ChannelFactory] = {"x": _x_channel}


def _zendesk(name: str, settings: Any) -> Helpdesk:
    from integrations.zendesk.adapter import ZendeskHelpdesk

    return ZendeskHelpdesk(name, settings)


HELPDESK_ADAPTERS: dict[str, HelpdeskFactory] = {"zendesk": _zendesk}
