"""Senders take turns: frames queued per sender, served round-robin by a bounded number of workers.

A transport that reads many senders over one connection (MQTT) puts each frame in its sender's queue
(`put`, byte-level work only). Each turn takes everything that sender has queued (one batch, which the
ingress folds into one commit); a sender with more frames after its turn goes to the back of the line. So a
sender's frames stay in order (one turn at a time per sender), a flooding sender's backlog is one job among
many, and a new sender waits behind other senders' turns, never behind a backlog.

Two bounds keep the event loop's rounds short: at most `workers` turns under way, and at most `per_round`
turns started per round of the loop. asyncio runs every ready callback in one round; with a task per sender
and a thousand frames in flight, a round took 0.2-0.47 s in issue 27's storm, and everything else on the loop
(delivery answers, the forwarder's leases, the status publisher, other transports) moved one step per round:
the police received 160-192 of the 6,600-8,300 alerts stored in the storm's first five seconds. See
docs/ingress.md ("Senders take turns").
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("sosbridge.ingress")

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SenderTurns(Generic[K, T]):
    """Per-sender queues served round-robin by at most `workers` tasks.

    `serve(sender, batch)` handles one turn; it should not raise (an exception is logged and the batch is
    considered served). Queues are plain lists: most senders have one frame waiting, and an empty deque costs
    600 bytes (issue 27: memory per frame in flight)."""

    def __init__(self, serve: Callable[[K, list[T]], Awaitable[None]], workers: int, per_round: int) -> None:
        if workers < 1 or per_round < 1:
            raise ValueError("workers and per_round must be at least 1")
        self._serve = serve
        self.workers = workers
        self.per_round = per_round
        self._left = per_round  # turns that may still start before the loop has gone round
        self._round: asyncio.Future[None] | None = None  # resolved once the loop has gone round
        self._queues: dict[K, list[T]] = {}  # every sender with a turn waiting or under way
        self._line: deque[K] = deque()  # senders waiting for a turn, in order
        self.tasks: set[asyncio.Task[None]] = set()

    def put(self, sender: K, item: T) -> None:
        queue = self._queues.get(sender)
        if queue is not None:
            queue.append(item)  # taken in this sender's next turn (or the one under way takes it)
            return
        self._queues[sender] = [item]
        self._line.append(sender)
        if len(self.tasks) < self.workers:
            task = asyncio.create_task(self._work())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @property
    def senders(self) -> int:
        """Senders with a turn waiting or under way."""
        return len(self._queues)

    @property
    def waiting(self) -> int:
        """Senders waiting for a worker."""
        return len(self._line)

    def take_all(self) -> list[T]:
        """Everything still queued, removed (a stopping transport leaves it unacknowledged)."""
        items = [item for queue in self._queues.values() for item in queue]
        for queue in self._queues.values():
            queue.clear()
        for sender in self._line:
            del self._queues[sender]  # a sender whose turn is under way is removed when it ends
        self._line.clear()
        return items

    async def _work(self) -> None:
        while self._line:
            if self._left <= 0:
                await self._loop_round()
                continue
            self._left -= 1
            sender = self._line.popleft()
            queue = self._queues[sender]
            batch = queue[:]
            queue.clear()
            try:
                await self._serve(sender, batch)
            except Exception as exc:  # a bug in serve: logged; the worker goes on with the next sender
                log.error("a sender's turn failed", extra={"error": repr(exc)})
            finally:
                if queue:
                    self._line.append(sender)  # its next turn, behind every sender waiting now
                else:
                    del self._queues[sender]

    async def _loop_round(self) -> None:
        """Until the event loop has gone round once: what became ready meanwhile (delivery answers, leases,
        socket reads) runs before more turns start."""
        if self._round is None:
            loop = asyncio.get_running_loop()
            self._round = loop.create_future()
            loop.call_soon(self._new_round)
        await self._round

    def _new_round(self) -> None:
        self._left = self.per_round
        done, self._round = self._round, None
        if done is not None and not done.done():
            done.set_result(None)
