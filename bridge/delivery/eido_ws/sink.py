"""The EIDO WebSocket notifier as a sink (`sosbridge.sinks` entry point `eido_ws`).

A route with `url = "wss://host:port/path"` (where the bridge listens) publishes each routed contact's
EIDO (bridge/delivery/formats/eido.py) to the subscribed CADs. Delivered once a subscription acknowledges
the event with `eventResponse` 200; nobody subscribed or nobody acknowledging within the route's timeout
is a retry, so the outbox keeps the contact (and a critical one fails over to the route's fallback).
The notifier's server (websockets) is imported when the sink starts, so a bridge with no `wss://` route
never loads it. Docs: docs/platform/eido-websocket.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.core.contact import Contact
from bridge.delivery.eido_ws.hub import Hub
from bridge.delivery.formats.common import RenderOptions
from bridge.delivery.formats.eido import build_eido
from bridge.delivery.sinks.base import Delivered, Outcome, Retry

if TYPE_CHECKING:
    from bridge.delivery.eido_ws.server import NotifierServer

_CLOSING = frozenset({"cancel"})


class EidoWsSink:
    def __init__(self, url: str, *, cert_file: str, key_file: str, client_ca_file: str, name: str = "eido-ws",
                 timeout_s: float = 10.0, redeliver_s: float = 2.0, options: RenderOptions | None = None) -> None:
        self.name = name
        self.url = url
        self.options = options or RenderOptions()
        self.timeout_s = timeout_s
        self.hub = Hub(redeliver_s=redeliver_s)
        self._files = (cert_file, key_file, client_ca_file)
        self.server: NotifierServer | None = None

    @classmethod
    def for_route(cls, route: Any, url: str, *, name: str, timeout_s: float, options: RenderOptions) -> EidoWsSink:
        return cls(url, cert_file=route.eido_cert_file, key_file=route.eido_key_file,
                   client_ca_file=route.eido_client_ca_file, name=name, timeout_s=timeout_s, options=options)

    async def start(self) -> None:
        from bridge.delivery.eido_ws.server import NotifierServer, server_tls

        self.server = NotifierServer(self.hub, self.url, server_tls(*self._files))
        await self.server.start()
        self.hub.start()

    async def deliver(self, item: Any) -> Outcome:
        try:
            contact = Contact.model_validate_json(item.payload)
            doc = build_eido(contact, self.options)
        except Exception as exc:  # a formatter bug must not lose the contact
            return Retry(f"render failed: {exc}"[:300])
        closed = contact.msg_type in _CLOSING or contact.state.value in ("resolved", "cancelled")
        acked = await self.hub.publish(contact.alert_id, doc, closed, self.timeout_s)
        if acked:
            return Delivered(200)
        if not any(True for _ in self.hub.subscriptions):
            return Retry("no EIDO subscriber")
        return Retry(f"no eventResponse 200 within {self.timeout_s:g} s")

    async def close(self) -> None:
        await self.hub.stop()
        if self.server is not None:
            await self.server.stop()
