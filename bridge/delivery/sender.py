"""A delivery process's side of its channel: each request is sent by the route's sink on a task of its
own, and its outcome is written back as soon as the sink returns.

The first frame is the hand-shake: `setup(body)` (given by the caller) builds the sinks from it, then
READY goes back. The process has no store and no state of its own: when the channel closes (the parent
stopped it, or died) the requests still running are cancelled, the sinks are closed and `serve` returns.
The parent holds each row's lease, so a request cut short here is rescheduled or re-leased there.
See docs/architecture.md ("Processes").
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from bridge.delivery.channel import answer, item_from
from bridge.delivery.sinks.base import Sink, deliver_guarded
from bridge.infra.aio import stop_tasks
from bridge.infra.channel import READY, FramedProtocol, pack, unpack

log = logging.getLogger("sosbridge.delivery")


class Sender(FramedProtocol):
    peer = "the main process"

    def __init__(self, setup: Callable[[bytes], dict[str, Sink]]) -> None:
        super().__init__()
        self._setup = setup
        self.sinks: dict[str, Sink] | None = None
        self.closed = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def frame_received(self, body: bytes) -> None:
        if self.sinks is None:
            self.sinks = self._setup(body)
            self.send_raw(pack(READY))
            return
        req_id, route, fields = unpack(body)
        task = asyncio.create_task(self._deliver(req_id, route, fields))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, req_id: int, route: str, fields: tuple[object, ...]) -> None:
        item = item_from(fields)
        sink = (self.sinks or {}).get(route)
        outcome = await deliver_guarded(sink, item, f"no sink for route {route!r} in the delivery process")
        self.send_raw(answer(req_id, outcome))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def serve(sock: socket.socket, setup: Callable[[bytes], dict[str, Sink]]) -> None:
    """Serve the channel on `sock` until it closes; then stop what runs and close the sinks."""
    loop = asyncio.get_running_loop()
    _, sender = await loop.create_connection(lambda: Sender(setup), sock=sock)
    await sender.closed.wait()  # the service's documented wait: it ends when the parent closes or dies
    await stop_tasks(list(sender.tasks))
    for sink in (sender.sinks or {}).values():
        try:
            await asyncio.wait_for(sink.close(), 5)
        except Exception as exc:
            log.warning("sink did not close", extra={"sink": sink.name, "error": repr(exc)})
