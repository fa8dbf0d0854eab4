"""Delivery tests' parts: a contact platform stand-in (an aiohttp server on loopback with the test's own
handler at `POST /contacts`) and the delivery stack in front of it (the SQLite store, the ledger, the
forwarder with its webhook sink, one `FreshContacts` shared by the two)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bridge.alerts.handoff import FreshContacts
from bridge.alerts.ledger import Ledger
from bridge.core.events import StatusBus
from bridge.delivery.forwarder import Forwarder
from bridge.delivery.sinks.webhook import WebhookSink
from bridge.infra.metrics import Metrics
from bridge.store.sqlite import SqliteStore


@contextlib.asynccontextmanager
async def loopback_receiver(handler: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    """Serve `handler` at POST /contacts on 127.0.0.1 (a free port); yields the URL."""
    app = web.Application()
    app.router.add_post("/contacts", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/contacts"
    finally:
        await runner.cleanup()


@dataclass
class DeliveryStack:
    store: SqliteStore
    fresh: FreshContacts
    ledger: Ledger
    forwarder: Forwarder


@contextlib.asynccontextmanager
async def delivery_stack(db: Path, url: str, workers: int) -> AsyncIterator[DeliveryStack]:
    """The store on `db` and a started forwarder with `workers` POSTing to `url`; stopped and closed after."""
    store = SqliteStore(db)
    await store.open()
    fresh = FreshContacts(workers, 30.0)
    ledger = Ledger(store, StatusBus(), fresh=fresh)
    forwarder = Forwarder(store, ledger, Metrics(), {"default": WebhookSink(url, "s" * 32)}, None, fresh=fresh,
                          workers=workers)
    try:
        await forwarder.start()
        yield DeliveryStack(store, fresh, ledger, forwarder)
    finally:
        await forwarder.stop()
        await store.close()
