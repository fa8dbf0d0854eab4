"""The main process's side of delivery processes: a `RemoteSink` per platform route hands each contact to a
delivery process over its socketpair and awaits the sink's outcome there.

The forwarder (lease, order, retries, fail-over, alarms, "delivered") stays in the main process and
treats a remote sink like any other: only the sending (render, sign, POST / SIP MESSAGE) moves. A
request is the wake-up: the child's event loop reads its socket, nothing polls. A contact whose process
dies before it answered gets `Retry` (the forwarder reschedules it; the same Idempotency-Key goes out
again); while no process is up a request waits for one at most the route's timeout. See
docs/architecture.md ("Processes").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from bridge.delivery.channel import outcome_of, request
from bridge.delivery.sinks.base import Outcome, Retry
from bridge.infra.aio import wait_event
from bridge.infra.channel import ParentEnd
from bridge.store.base import OutboxItem

GONE = "the delivery process exited before it answered"


class Link(ParentEnd):
    """One delivery process's socket: requests out, outcomes in, by request id."""

    peer = "a delivery process"

    def __init__(self, on_ready: Callable[[Link], None], on_lost: Callable[[Link], None]) -> None:
        super().__init__()
        self._on_ready = on_ready
        self._on_lost = on_lost
        self.pending: dict[int, asyncio.Future[Outcome]] = {}
        self._next_id = 0

    async def deliver(self, route: str, item: OutboxItem) -> Outcome:
        self._next_id += 1
        req_id = self._next_id
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.pending[req_id] = future
        self.send_raw(request(req_id, route, item))
        try:
            return await future
        finally:
            self.pending.pop(req_id, None)  # answered, lost or cancelled (a stopping forwarder)

    def became_ready(self) -> None:
        self._on_ready(self)

    def message_received(self, message: tuple[object, ...]) -> None:
        req_id, outcome = outcome_of(message)
        future = self.pending.pop(req_id, None)
        if future is not None and not future.done():
            future.set_result(outcome)

    def channel_lost(self) -> None:
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(Retry(GONE))
        self._on_lost(self)


class RemoteDelivery:
    """The delivery processes that are up, and the one a contact goes to (the one with fewest in flight)."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.any_ready = asyncio.Event()

    def link(self, index: int) -> Link:
        """A new channel's protocol; it counts once its process said it is ready (any process delivers any
        contact: `index` does not matter)."""
        return Link(self._ready, self._lost)

    def _ready(self, link: Link) -> None:
        self.links.append(link)
        self.any_ready.set()

    def _lost(self, link: Link) -> None:
        with contextlib.suppress(ValueError):
            self.links.remove(link)
        if not self.links:
            self.any_ready.clear()

    async def deliver(self, route: str, item: OutboxItem, wait_s: float) -> Outcome:
        if not self.links and not await wait_event(self.any_ready, wait_s):
            return Retry("no delivery process is running")
        link = min(self.links, key=lambda x: len(x.pending))
        return await link.deliver(route, item)


class RemoteSink:
    """A route's sink as the forwarder sees it; the real one (same name) sends from a delivery process."""

    def __init__(self, name: str, route: str, remote: RemoteDelivery, timeout_s: float) -> None:
        self.name = name
        self.route = route
        self.remote = remote
        self.timeout_s = timeout_s

    async def deliver(self, item: OutboxItem) -> Outcome:
        return await self.remote.deliver(self.route, item, self.timeout_s)

    async def close(self) -> None:
        """The processes are stopped by their supervisor, after the forwarder."""
