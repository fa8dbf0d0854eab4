"""The platform routes' sinks, built the same way in the main process and in a delivery process.

`build_sinks`: one sink per route (a webhook or a SIP MESSAGE, by the URL's scheme), its own fallback
URL if it has one, and the shared fsynced spool. `portable_routes`: the routes whose sink may send
from a delivery process: webhook and SIP only (pure clients). A sink that serves (the EIDO notifier
listens on a port) or that needs the main process's state (the SMS gateway the serial adapter
declares, the emergency contacts' sinks) stays in the main process. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from bridge.app.config import Settings
from bridge.delivery.formats import options_from_settings
from bridge.delivery.routing import DEFAULT_ROUTE, Route, RoutingTable
from bridge.delivery.sink_choice import sink_for, sink_kind
from bridge.delivery.sinks.base import Sink
from bridge.delivery.sinks.file import FileSink

PORTABLE_KINDS = frozenset({"webhook", "sip"})


@dataclass
class Sinks:
    primary: dict[str, Sink]
    fallbacks: dict[str, Sink]
    spool: Sink


def build_sinks(settings: Settings, table: RoutingTable, only: Collection[str] | None = None) -> Sinks:
    """Every route's sinks, or those of the routes named in `only`."""
    options = options_from_settings(settings)
    primary: dict[str, Sink] = {}
    fallbacks: dict[str, Sink] = {}
    for route in table.all_routes():
        if only is not None and route.name not in only:
            continue
        timeout = _timeout_s(settings, route)
        name = "platform" if route.name == DEFAULT_ROUTE else route.name
        primary[route.name] = sink_for(route, route.url, name=name, timeout_s=timeout, options=options)
        if route.fallback_url:
            fallbacks[route.name] = sink_for(route, route.fallback_url, name=f"{name}-fallback",
                                             timeout_s=timeout, options=options)
    return Sinks(primary, fallbacks, FileSink(settings.effective_fallback_file, name="fallback-spool"))


def portable_routes(table: RoutingTable) -> list[str]:
    """The routes a delivery process sends: their primary sink is a webhook or SIP client."""
    return [route.name for route in table.all_routes() if sink_kind(route.url) in PORTABLE_KINDS]


def route_timeout_s(settings: Settings, table: RoutingTable, route: str) -> float:
    found = table.get(route)
    return _timeout_s(settings, found) if found is not None else settings.platform_timeout_s


def _timeout_s(settings: Settings, route: Route) -> float:
    """A route's own timeout, else SOSBRIDGE_PLATFORM_TIMEOUT_S."""
    return route.timeout_s or settings.platform_timeout_s
