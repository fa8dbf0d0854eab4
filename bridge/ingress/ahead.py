"""One sender's backlogs sent ahead: a transport hands a sender's backlog to the ingress (`Ingress.send_ahead`)
and reads its next one while the first is stored, at most `depth` at a time. Each backlog is finished
(answered, acknowledged, retried) by a task of its own, after the one before it: so a sender's frames are
acknowledged in order, and a frame not stored is retried before any frame that came after it is sent again.
Once one of a sender's backlogs was not stored, nothing more of that sender goes ahead until all its
backlogs are finished. See docs/architecture.md#intake-on-more-than-one-core.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class _Sender:
    channel: object  # where its backlogs went: a later one goes behind them only on the same channel
    finishing: deque[asyncio.Task[None]] = field(default_factory=deque)  # oldest first
    failed: bool = False  # one was not stored: the rest wait, and are sent again after it


class SendersAhead(Generic[K]):
    def __init__(self, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.depth = depth
        self._senders: dict[K, _Sender] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def channel(self, sender: K) -> object | None:
        """The channel the sender's unfinished backlogs went on (None: none unfinished)."""
        state = self._senders.get(sender)
        return state.channel if state is not None else None

    def last(self, sender: K) -> asyncio.Task[None] | None:
        """The sender's newest unfinished backlog's task: a new one finishes after it."""
        state = self._senders.get(sender)
        return state.finishing[-1] if state is not None else None

    def may_send(self, sender: K) -> bool:
        """Whether a backlog of the sender may go ahead now (none of its backlogs failed, room left)."""
        state = self._senders.get(sender)
        return state is None or (not state.failed and len(state.finishing) < self.depth)

    def failed(self, sender: K) -> None:
        state = self._senders.get(sender)
        if state is not None:
            state.failed = True

    def add(self, sender: K, channel: object, task: asyncio.Task[None]) -> None:
        state = self._senders.get(sender)
        if state is None:
            state = self._senders[sender] = _Sender(channel)
        state.finishing.append(task)
        self.tasks.add(task)
        task.add_done_callback(lambda done: self._finished(sender, state, done))

    async def wait_room(self, sender: K) -> None:
        """Until fewer than `depth` of the sender's backlogs are unfinished (returns at once if so)."""
        while (state := self._senders.get(sender)) is not None and not state.failed \
                and len(state.finishing) >= self.depth:
            await asyncio.wait([state.finishing[0]])

    async def wait_all(self, sender: K) -> None:
        """Until every backlog the sender sent ahead is finished (returns at once if none is)."""
        while (state := self._senders.get(sender)) is not None:
            await asyncio.wait([state.finishing[-1]])

    def _finished(self, sender: K, state: _Sender, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task in state.finishing:
            state.finishing.remove(task)
        if not state.finishing and self._senders.get(sender) is state:
            del self._senders[sender]
