"""The forwarder leases windows ahead (bridge/delivery/forwarder.py, AHEAD_WINDOWS): while every worker is
busy, the next contacts are already leased, so a worker that comes free starts the next one at once instead
of waiting for a lease (a group commit; 0.04-0.15 s under a flood), even while a lease is under way. They
start in lease order, and a stopping forwarder gives back the ones it never started, due at once.

Real parts (tests/support/delivery.py): the SQLite store, the ledger and the forwarder with its webhook sink,
POSTing to an aiohttp server on loopback that holds every contact until the test releases it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from bridge.core.model import Alert
from bridge.delivery.forwarder import AHEAD_WINDOWS
from bridge.store.base import Change
from bridge.store.sqlite import SqliteStore
from tests.support.delivery import delivery_stack, loopback_receiver
from tests.support.factories import make_alert, make_item, until


async def store_waiting(store: SqliteStore, alerts: list[Alert]) -> None:
    """Alerts whose first contacts wait in the store (written directly, not handed over in memory)."""
    for alert in alerts:
        await asyncio.wait_for(store.commit(Change(alert=alert, outbox=[make_item(alert, 1)])), 10)


def gated_receiver() -> tuple[list[str], dict[str, asyncio.Event], Callable[[web.Request], Awaitable[web.Response]]]:
    """A platform that records each contact's alert id as it arrives and answers 200 once the test sets that
    alert's gate (the arrivals list, the gates, the handler)."""
    arrived: list[str] = []
    gates: dict[str, asyncio.Event] = {}

    async def receive(request: web.Request) -> web.Response:
        alert_id = request.headers["X-SOSBridge-Alert-Id"]
        arrived.append(alert_id)
        gates.setdefault(alert_id, asyncio.Event())
        await asyncio.wait_for(gates[alert_id].wait(), 10)
        return web.Response(status=200)

    return arrived, gates, receive


async def test_a_worker_that_comes_free_starts_the_next_contact_without_a_lease(tmp_path: Path) -> None:
    arrived, gates, receive = gated_receiver()

    leased = 2 + 2 * AHEAD_WINDOWS  # two in flight, and the windows (two each) leased ahead
    alerts = [make_alert(device_id=f"d{n}") for n in range(leased + 2)]
    async with loopback_receiver(receive) as url, delivery_stack(tmp_path / "store.db", url, workers=2) as stack:
        leases: list[int] = []
        real_lease = stack.store.lease

        async def counted_lease(limit: int, lease_s: float, now: float):  # type: ignore[no-untyped-def]
            items = await real_lease(limit, lease_s, now)
            leases.append(len(items))
            return items

        stack.store.lease = counted_lease  # type: ignore[method-assign]
        await store_waiting(stack.store, alerts)
        stack.forwarder.wake()
        await until(lambda: len(arrived) == 2, 10)
        # Two in flight, and the windows leased ahead: every row but the last two leased, two POSTs.
        await until(lambda: sum(leases) == leased, 10)
        rows = [await stack.store.outbox_items(a.alert_id) for a in alerts]
        assert [r[0].state for r in rows] == ["inflight"] * leased + ["pending"] * 2

        # Every lease the forwarder makes from here on is blocked: a contact that starts now was leased ahead.
        blocked = asyncio.Event()

        async def blocked_lease(limit: int, lease_s: float, now: float):  # type: ignore[no-untyped-def]
            await asyncio.wait_for(blocked.wait(), 10)
            return await counted_lease(limit, lease_s, now)

        stack.store.lease = blocked_lease  # type: ignore[method-assign]
        gates[arrived[0]].set()
        await until(lambda: len(arrived) == 3, 10)
        assert arrived == [a.alert_id for a in alerts[:3]]  # in the order they were stored
        blocked.set()
        for alert in alerts:
            gates.setdefault(alert.alert_id, asyncio.Event()).set()
        await until(lambda: len(arrived) == len(alerts), 10)
        assert arrived == [a.alert_id for a in alerts]


async def test_a_worker_that_comes_free_during_a_lease_starts_the_next_contact_at_once(tmp_path: Path) -> None:
    """Under a flood a lease waits for the intake's group commit; the workers that come free meanwhile start
    what was leased ahead then, not when that lease comes back (which kept the police at about 250 contacts a
    second while the bridge stored 1,700)."""
    arrived, gates, receive = gated_receiver()

    alerts = [make_alert(device_id=f"d{n}") for n in range(2 + 2 * AHEAD_WINDOWS + 2)]
    async with loopback_receiver(receive) as url, delivery_stack(tmp_path / "store.db", url, workers=2) as stack:
        await store_waiting(stack.store, alerts)
        stack.forwarder.wake()
        await until(lambda: len(arrived) == 2, 10)
        pending = [a.alert_id for a in alerts[-2:]]

        async def all_but_the_last_two_leased() -> bool:
            states = [(await stack.store.outbox_items(a.alert_id))[0].state for a in alerts]
            return states == ["inflight" if a.alert_id not in pending else "pending" for a in alerts]

        await until(all_but_the_last_two_leased, 10)
        lease_started = asyncio.Event()
        blocked = asyncio.Event()
        real_lease = stack.store.lease

        async def blocked_lease(limit: int, lease_s: float, now: float):  # type: ignore[no-untyped-def]
            lease_started.set()
            await asyncio.wait_for(blocked.wait(), 10)
            return await real_lease(limit, lease_s, now)

        stack.store.lease = blocked_lease  # type: ignore[method-assign]
        gates[arrived[0]].set()  # the forwarder starts the third, then leases again: that lease hangs
        await until(lambda: len(arrived) == 3, 10)
        await asyncio.wait_for(lease_started.wait(), 10)
        gates[arrived[1]].set()
        gates[arrived[2]].set()
        # Both freed workers start the next contacts leased ahead while the lease still hangs.
        await until(lambda: len(arrived) == 5, 10)
        assert not blocked.is_set()
        assert arrived == [a.alert_id for a in alerts[:5]]
        blocked.set()
        for alert in alerts:
            gates.setdefault(alert.alert_id, asyncio.Event()).set()
        await until(lambda: len(arrived) == len(alerts), 10)
        assert arrived == [a.alert_id for a in alerts]


async def test_a_stopping_forwarder_gives_back_what_it_leased_ahead(tmp_path: Path) -> None:
    release = asyncio.Event()
    arrived: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        arrived.append(request.headers["X-SOSBridge-Alert-Id"])
        await asyncio.wait_for(release.wait(), 10)
        return web.Response(status=200)

    ahead = AHEAD_WINDOWS  # one worker: windows of one
    alerts = [make_alert(device_id=f"d{n}") for n in range(1 + ahead + 1)]
    async with loopback_receiver(receive) as url:
        async with delivery_stack(tmp_path / "store.db", url, workers=1) as stack:
            await store_waiting(stack.store, alerts)
            stack.forwarder.wake()
            await until(lambda: len(arrived) == 1, 10)  # the one worker holds the first alert's contact

            async def states() -> list[str]:
                return [(await stack.store.outbox_items(a.alert_id))[0].state for a in alerts]

            async def leased_ahead() -> bool:
                return await states() == ["inflight"] * (1 + ahead) + ["pending"]

            await until(leased_ahead, 10)  # the next alerts' contacts wait in the look-ahead
            stopped_at = time.time()
        release.set()  # stopped (the first delivery cancelled, its lease kept) and closed
    reopened = SqliteStore(tmp_path / "store.db")
    await reopened.open()
    try:
        first, *never_started, last = [(await reopened.outbox_items(a.alert_id))[0] for a in alerts]
        assert first.state == "inflight"  # cancelled mid-delivery: sent again when its lease expires
        # Never started: due again at once, with no attempt spent.
        assert len(never_started) == ahead
        for item in never_started:
            assert item.state == "retry" and item.attempts == 0
            assert stopped_at - 1 <= item.next_attempt_at <= time.time()
        assert last.state == "pending"
    finally:
        await reopened.close()


async def test_a_new_alerts_first_contact_goes_before_updates_leased_ahead(tmp_path: Path) -> None:
    """The look-ahead must not turn priority round: an update leased ahead while every worker was busy still
    waits behind a life-safety first contact stored after it (the store's lease order)."""
    arrived: list[tuple[str, str]] = []
    release = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        arrived.append((request.headers["X-SOSBridge-Alert-Id"], request.headers["X-SOSBridge-Msg-Type"]))
        if len(arrived) == 1:
            await asyncio.wait_for(release.wait(), 10)  # the one worker stays busy with the first alert
        return web.Response(status=200)

    first, escalated, new = (make_alert(device_id=f"d{n}") for n in range(3))
    async with loopback_receiver(receive) as url, delivery_stack(tmp_path / "store.db", url, workers=1) as stack:
        await store_waiting(stack.store, [first])
        stack.forwarder.wake()
        await until(lambda: len(arrived) == 1, 10)
        # An escalation update of another alert (its first contact delivered long ago) is leased ahead.
        await asyncio.wait_for(stack.store.commit(Change(alert=escalated, outbox=[make_item(escalated, 2)])), 10)
        stack.forwarder.wake()

        async def update_leased_ahead() -> bool:
            return (await stack.store.outbox_items(escalated.alert_id))[0].state == "inflight"

        await until(update_leased_ahead, 10)
        # A new alert's first contact, committed as the pipeline does: every worker is busy, so it is left in
        # the store, behind nothing of its rank.
        await asyncio.wait_for(stack.ledger.commit(Change(alert=new, outbox=[make_item(new, 1)]), new_alert=True), 10)
        release.set()
        await until(lambda: len(arrived) == 3, 10)
    assert arrived == [(first.alert_id, "alert"), (new.alert_id, "alert"), (escalated.alert_id, "update")]
