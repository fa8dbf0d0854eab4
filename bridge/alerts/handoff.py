"""Fresh contacts handed from the ledger to the forwarder in memory, without a lease round trip.

Built once by the runtime and given to both through their constructors. Before a commit the ledger
claims the first contact of a brand-new alert (`claim`): it is written already leased, since no earlier
contact of the alert can be waiting, so per-alert order holds. After the commit it hands them over
(`hand_over`); the forwarder takes them (`take`) and wakes on `event`. A crash before delivery leaves a
leased row that is leased again when it expires, exactly like a crash mid-delivery. See
docs/architecture.md ("Delivery").
"""

from __future__ import annotations

import asyncio
import time

from bridge.store.base import OutboxItem


class FreshContacts:
    def __init__(self, capacity: int, lease_s: float) -> None:
        self.capacity = capacity  # the forwarder's workers: never claim more than it can start at once
        self.lease_s = lease_s
        self.busy = 0  # deliveries the forwarder has running (it counts them in and out)
        self.reserved = 0  # claimed for a commit still under way
        self.event = asyncio.Event()  # set when there is something to take or lease
        self._ready: list[OutboxItem] = []
        self.closed = False

    def claim(self, items: list[OutboxItem]) -> list[OutboxItem]:
        """Before the commit: mark the first contacts of new alerts leased, while a worker is free."""
        claimed: list[OutboxItem] = []
        now = time.time()
        for item in items:
            if item.msg_type != "alert" or self.busy + self.reserved + len(self._ready) >= self.capacity:
                continue
            item.state = "inflight"
            item.lease_until = now + self.lease_s
            self.reserved += 1
            claimed.append(item)
        return claimed

    def hand_over(self, items: list[OutboxItem], committed: bool) -> None:
        """After the commit: queue what was claimed for delivery, or forget it if the commit failed."""
        self.reserved -= len(items)
        if committed and not self.closed:
            self._ready.extend(items)
        self.wake()

    def take(self) -> list[OutboxItem]:
        ready, self._ready = self._ready, []
        return ready

    def wake(self) -> None:
        self.event.set()
