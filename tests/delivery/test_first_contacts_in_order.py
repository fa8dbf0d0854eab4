"""First contacts go out in the order their alerts were stored, also under load (issue 27's storm): once
one waits in the store for want of a free worker, a newer alert's first contact does not take the next
free worker ahead of it through the in-memory hand-over (bridge/alerts/handoff.py).

Real parts (tests/support/delivery.py): the SQLite store, the ledger and the forwarder with its webhook sink
(one worker), POSTing to an aiohttp server on loopback that records the order in which contacts arrive and
holds the first one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from bridge.alerts.handoff import Claim, FreshContacts
from bridge.core.model import Alert
from bridge.store.base import Change
from tests.support.delivery import delivery_stack, loopback_receiver
from tests.support.factories import make_alert, make_item


async def until(condition: Callable[[], bool], what: str) -> None:
    """Checked on every turn of the loop, not woken by an event: the test must act in the very turn the
    worker comes free, before the forwarder's own next step (an event would wake it a turn later)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)
    assert condition(), what


async def test_a_newer_alert_never_overtakes_one_waiting_in_the_store(tmp_path: Path) -> None:
    arrived: list[str] = []
    release = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        arrived.append(request.headers["X-SOSBridge-Alert-Id"])
        if len(arrived) == 1:
            await release.wait()  # the one worker stays busy with the first alert
        return web.Response(status=200)

    alerts: list[Alert] = [make_alert(device_id=f"d{n}") for n in range(4)]
    async with loopback_receiver(receive) as url, delivery_stack(tmp_path / "store.db", url, workers=1) as stack:

        async def store_alert(alert: Alert) -> None:
            change = Change(alert=alert, outbox=[make_item(alert, 1)])
            await asyncio.wait_for(stack.ledger.commit(change, new_alert=True), 10)

        await store_alert(alerts[0])
        await until(lambda: len(arrived) == 1, "the first alert reached the platform")
        await store_alert(alerts[1])  # the worker is busy: these two wait in the store
        await store_alert(alerts[2])
        release.set()
        # The worker comes free; the newest alert is stored at that very moment, before the forwarder has
        # leased the two that waited (the storm's case: the loop is busy, the lease comes late).
        await until(lambda: stack.fresh.busy == 0, "the first delivery finished")
        await store_alert(alerts[3])
        await until(lambda: len(arrived) == 4, "every alert reached the platform")
    assert arrived == [a.alert_id for a in alerts]


def test_a_claim_left_in_the_store_holds_later_ones_back_until_a_lease_drains_it() -> None:
    fresh = FreshContacts(1, 30.0)
    a, b, c = (make_item(make_alert(device_id=f"d{n}"), 1) for n in range(3))
    first = fresh.claim([a])
    assert first.items == [a] and not fresh.behind
    second = fresh.claim([b])  # no free worker: b waits in the store
    assert (second.items, second.left, fresh.behind) == ([], 1, True)
    fresh.hand_over(first, committed=True)
    before = fresh.left_commits
    fresh.hand_over(second, committed=True)
    fresh.busy = 0
    fresh.take()
    # A lease that began before b's commit finished may not have seen it: still behind.
    fresh.drained(before)
    assert fresh.behind and fresh.claim([c]).items == []
    # A lease that began after every left-behind commit finished, and came back short: drained.
    fresh.hand_over(Claim(left=1), committed=True)  # c's commit
    fresh.drained(fresh.left_commits)
    assert not fresh.behind and fresh.claim([make_item(make_alert(device_id="d9"), 1)]).items != []
