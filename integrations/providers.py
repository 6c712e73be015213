"""The explicit registry of providers: adding one is a folder and a line here.

- `CHANNEL_BLUEPRINTS` / `HELPDESK_BLUEPRINTS`: name → factory of the Flask blueprint that
  receives the provider's webhooks (`factory(runtime) -> Blueprint`), mounted by
  `webhook_server.create_app`.
- `HELPDESK_ADAPTERS`: helpdesk `type` in the config → factory of its adapter
  (`factory(name, settings) -> Helpdesk`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Blueprint

    from integrations.helpdesk import Helpdesk
    from integrations.runtime import Runtime

BlueprintFactory = Callable[["Runtime"], "Blueprint"]
HelpdeskFactory = Callable[[str, Any], "Helpdesk"]

CHANNEL_BLUEPRINTS: dict[str, BlueprintFactory] = {}
HELPDESK_BLUEPRINTS: dict[str, BlueprintFactory] = {}
HELPDESK_ADAPTERS: dict[str, HelpdeskFactory] = {}
