"""Which transports are installed and how each may answer a device: a profile names one of them.

Each adapter (the `sosbridge.adapters` entry point group) declares the transport names it carries and the
acknowledgement styles it can give (`Adapter.transports`, e.g. `{"mqtt": {"mqtt_puback", "mqtt_status"}}`);
`none` (the transport acknowledges at its own level only) is always allowed. A third-party transport
names itself the same way, so a profile can say `transport: acme-tcp`. See docs/integrators/plugins.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

from bridge.infra.plugins import load_group

ALWAYS = frozenset({"none"})


def carried_by(adapter: object, fallback_name: str) -> dict[str, frozenset[str]]:
    """The transports one adapter class declares (its `name` with no ack style of its own when it declares
    none)."""
    declared: Mapping[str, Iterable[str]] | None = getattr(adapter, "transports", None)
    if not declared:
        return {str(getattr(adapter, "name", fallback_name)): ALWAYS}
    return {name: ALWAYS | frozenset(acks) for name, acks in declared.items()}


@cache
def installed_transports() -> dict[str, frozenset[str]]:
    """Transport name → acknowledgement styles, over every installed adapter."""
    out: dict[str, frozenset[str]] = {}
    for plugin in load_group("sosbridge.adapters"):
        for name, acks in carried_by(plugin.obj, plugin.name).items():
            out[name] = out.get(name, ALWAYS) | acks
    return out


def transport_problem(transport: str, ack: str, installed: Mapping[str, frozenset[str]]) -> str | None:
    """Why a profile's transport/ack pair cannot work with these transports, or None."""
    if transport not in installed:
        known = ", ".join(sorted(installed))
        return f"transport {transport!r} is not carried by any installed adapter (installed: {known})"
    if ack not in installed[transport]:
        gives = ", ".join(sorted(installed[transport]))
        return f"ack {ack!r} is not one the {transport} transport gives (it gives: {gives})"
    return None
