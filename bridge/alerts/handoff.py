"""Fresh contacts handed from the ledger to the forwarder in memory, without a lease round trip.

Built once by the runtime and given to both through their constructors. Before a commit the ledger
claims the first contact of a brand-new alert (`claim`): it is written already leased, since no earlier
contact of the alert can be waiting, so per-alert order holds. After the commit it hands them over
(`hand_over`); the forwarder takes them (`take`) and wakes on `event`. A crash before delivery leaves a
leased row that is leased again when it expires, exactly like a crash mid-delivery. See
docs/architecture.md ("Delivery").

First contacts go out in the order they were stored: once one found every worker busy and was left in the
store, no later one is claimed (it would take the next free worker ahead of the one waiting) until a lease
comes back with room to spare, i.e. the store has no contact waiting any more (`behind`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bridge.store.base import OutboxItem


@dataclass
class Claim:
    """What one commit claimed (`items`), and how many of its first contacts it left in the store."""

    items: list[OutboxItem] = field(default_factory=list)
    left: int = 0


class FreshContacts:
    def __init__(self, capacity: int, lease_s: float) -> None:
        self.capacity = capacity  # the forwarder's workers: never claim more than it can start at once
        self.lease_s = lease_s
        self.busy = 0  # deliveries the forwarder has running (it counts them in and out)
        self.reserved = 0  # claimed for a commit still under way
        self.event = asyncio.Event()  # set when there is something to take or lease
        self._ready: list[OutboxItem] = []
        self.closed = False
        # A first contact was left in the store for want of a worker, and no lease has drained the store
        # since: under load the newest alert would otherwise take each freed worker (issue 27's storm: the
        # stored ones waited until the storm was over while later ones went straight out).
        self.behind = False
        # Left-in-store first contacts whose commit is still under way (a lease cannot see them yet), and
        # how many commits that left one have finished (a lease that began before one did may not see it).
        self.leaving = 0
        self.left_commits = 0

    def claim(self, items: list[OutboxItem]) -> Claim:
        """Before the commit: mark the first contacts of new alerts leased, while a worker is free and no
        earlier one waits in the store."""
        claim = Claim()
        now = time.time()
        for item in items:
            if item.msg_type != "alert":
                continue
            if self.behind or self.busy + self.reserved + len(self._ready) >= self.capacity:
                self.behind = True  # this one waits in the store: later ones queue behind it
                claim.left += 1
                continue
            item.state = "inflight"
            item.lease_until = now + self.lease_s
            self.reserved += 1
            claim.items.append(item)
        self.leaving += claim.left
        return claim

    def hand_over(self, claim: Claim, committed: bool) -> None:
        """After the commit: queue what was claimed for delivery, or forget it if the commit failed."""
        self.reserved -= len(claim.items)
        self.leaving -= claim.left
        if claim.left:
            self.left_commits += 1
        if committed and not self.closed:
            self._ready.extend(claim.items)
        self.wake()

    def drained(self, left_commits_before: int) -> None:
        """The forwarder leased fewer rows than it had room for, in a lease that began when
        `left_commits` was `left_commits_before`: unless a first contact left in the store since could
        have been missed by it, nothing waits there any more."""
        if self.leaving == 0 and self.left_commits == left_commits_before:
            self.behind = False

    def take(self) -> list[OutboxItem]:
        ready, self._ready = self._ready, []
        return ready

    def wake(self) -> None:
        self.event.set()
