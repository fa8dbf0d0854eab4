"""The resolver of emergency contacts' webhooks: resolves as usual, then keeps only the addresses
`bridge.delivery.sinks.outbound.refused_address` allows. Its own module because it subclasses aiohttp's
resolver: the main process imports aiohttp (about 7 MB resident) only when it first sends a notification
(issue 27's memory target). See docs/operations/security.md ("Outbound to contact webhooks").
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from bridge.delivery.sinks.outbound import AddressRefused, refused_address
from bridge.infra.listeners import Network


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then keeps only addresses that may be sent to; none left: AddressRefused."""

    def __init__(self, allow: tuple[Network, ...] = (), inner: AbstractResolver | None = None) -> None:
        self.allow = allow
        self.inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        kept, why = [], None
        for entry in found:
            reason = refused_address(entry["host"], self.allow)
            if reason is None:
                kept.append(entry)
            else:
                why = why or reason
        if not kept:
            raise AddressRefused(why or "no address")
        return kept

    async def close(self) -> None:
        await self.inner.close()
