"""Per-alert order holds while deliveries are recorded in the background: a contact is leased only once the
one before it (same alert, same route) is recorded delivered, so the platform sees 1, 2, 3 for each alert.

Real parts (tests/support/delivery.py): the SQLite store, the ledger and the forwarder with its webhook
sink, POSTing to an aiohttp server on loopback that records the order of arrival.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from aiohttp import web

from bridge.store.base import Change
from bridge.store.sqlite import SqliteStore
from tests.support.delivery import delivery_stack, loopback_receiver
from tests.support.factories import make_alert, make_item

ALERTS = 4
CONTACTS = 6


async def test_each_alerts_contacts_arrive_in_order_once(tmp_path: Path) -> None:
    arrived: dict[str, list[str]] = defaultdict(list)
    done = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        # An earlier contact takes longer to answer: one sent before the previous one was recorded
        # delivered would be recorded here first.
        await asyncio.sleep(0.02 * (CONTACTS - int(key.rsplit(":", 1)[1])))
        arrived[request.headers["X-SOSBridge-Alert-Id"]].append(key)
        if sum(map(len, arrived.values())) >= ALERTS * CONTACTS:
            done.set()
        return web.Response(status=200)

    async with loopback_receiver(receive) as url:
        async with delivery_stack(tmp_path / "store.db", url, workers=16) as stack:
            alerts = [make_alert(device_id=f"d{n}") for n in range(ALERTS)]
            await asyncio.gather(*(
                stack.ledger.commit(
                    Change(alert=a, outbox=[make_item(a, seq) for seq in range(1, CONTACTS + 1)]), new_alert=True
                )
                for a in alerts
            ))
            async with asyncio.timeout(30):
                await done.wait()
            await asyncio.sleep(0.3)  # anything sent twice would arrive now
    for a in alerts:
        assert arrived[a.alert_id] == [f"{a.alert_id}:{seq}" for seq in range(1, CONTACTS + 1)], a.alert_id
    # Every delivery was recorded before the forwarder stopped: nothing is left in flight.
    store2 = SqliteStore(tmp_path / "store.db")
    await store2.open()
    try:
        stats = await store2.outbox_stats(0.0, 3)
        assert (stats.delivered, stats.inflight, stats.pending) == (ALERTS * CONTACTS, 0, 0)
    finally:
        await store2.close()
