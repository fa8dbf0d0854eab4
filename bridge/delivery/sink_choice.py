"""Which sink a route's URL gets: the `sosbridge.sinks` plug-in named after its scheme.

`http`/`https` → `webhook` (signed POST), `sip`/`sips`/`urn:service:` → `sip` (RFC 8876 MESSAGE),
`wss` → `eido_ws` (the EIDO notifier the police CAD subscribes to; the URL is where the bridge listens).
A sink with an async `start()` is started with the runtime (a server such as the notifier).
A plug-in class offers `for_route(route, url, name=, timeout_s=, options=)`; built-ins register the same
way as third parties (pyproject.toml). Docs: docs/platform/sip-message.md.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from bridge.delivery.formats.common import RenderOptions
from bridge.delivery.routing import Route
from bridge.delivery.sinks.base import Sink
from bridge.delivery.sip.uri import is_sip_target
from bridge.infra.plugins import load_group


def sink_kind(url: str) -> str:
    if url.startswith("wss://"):
        return "eido_ws"
    return "sip" if is_sip_target(url) else "webhook"


@cache
def _plugins() -> dict[str, Any]:
    return {p.name: p.obj for p in load_group("sosbridge.sinks")}


def sink_for(route: Route, url: str, *, name: str, timeout_s: float, options: RenderOptions) -> Sink:
    kind = sink_kind(url)
    cls = _plugins().get(kind)
    if cls is None or not hasattr(cls, "for_route"):
        raise LookupError(f"no sosbridge.sinks plug-in {kind!r} for route {route.name!r} (reinstall the package)")
    sink: Sink = cls.for_route(route, url, name=name, timeout_s=timeout_s, options=options)
    return sink
