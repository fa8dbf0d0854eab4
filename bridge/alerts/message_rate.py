"""The person's texts for the platform, at a rate per device (docs/operations/security.md, "The person's texts").

A burst of `burst` texts goes out as one `message` contact each; past it, texts wait (each already stored
in the alert's history) and go out together as ONE contact whose `messages` lists every waiting text in
order, once the device's bucket refills (or with its next text that is within the rate). Nothing is
lost: a text that cannot wait any longer (the bridge stopping) is flushed at once.

`admit()` is pure bookkeeping; the pipeline owns the commit and calls `flush` when the timer fires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bridge.core.contact import ContactMessage
from bridge.infra.aio import stop_tasks
from bridge.infra.ratelimit import TokenBuckets

MAX_WAIT_S = 60.0  # a waiting text goes out within this long whatever the rate says


class MessageRate:
    def __init__(self, burst: int, per_min: float) -> None:
        self.buckets = TokenBuckets(burst, per_min / 60)
        self.waiting: dict[str, list[ContactMessage]] = {}  # alert id -> texts waiting, oldest first
        self._timers: dict[str, asyncio.Task[None]] = {}

    def admit(self, device_id: str, alert_id: str, message: ContactMessage, now: float) -> list[ContactMessage]:
        """The texts to send now, oldest first (the waiting ones, then this); empty: this one waits."""
        if self.buckets.allow(device_id, now):
            return [*self.waiting.pop(alert_id, []), message]
        self.waiting.setdefault(alert_id, []).append(message)
        return []

    def undo(self, alert_id: str, batch: list[ContactMessage], message: ContactMessage) -> None:
        """The commit of `admit`'s outcome failed: its texts wait again, in order (the caller retries)."""
        waiting = self.waiting.setdefault(alert_id, [])
        if not batch and waiting and waiting[-1] is message:
            waiting.pop()
        elif batch:
            waiting[:0] = batch[:-1]
        if not waiting:
            del self.waiting[alert_id]

    def take(self, alert_id: str) -> list[ContactMessage]:
        return self.waiting.pop(alert_id, [])

    def put_back(self, alert_id: str, batch: list[ContactMessage]) -> None:
        self.waiting.setdefault(alert_id, [])[:0] = batch

    def delay(self, device_id: str) -> float:
        return min(max(self.buckets.retry_after(device_id), 0.05), MAX_WAIT_S)

    def schedule(self, alert_id: str, delay: float, flush: Callable[[], Awaitable[None]]) -> None:
        """One timer per alert: when it fires, `flush` sends what is waiting (nothing, if a text within
        the rate took it meanwhile)."""
        timer = self._timers.get(alert_id)
        if timer is not None and not timer.done():
            return

        async def fire() -> None:
            await asyncio.sleep(delay)  # a timer's wait: stop() cancels it and flushes at once
            self._timers.pop(alert_id, None)
            await flush()

        self._timers[alert_id] = asyncio.create_task(fire(), name=f"messages-{alert_id}")

    async def stop(self) -> list[str]:
        """Cancel the timers; the alerts whose texts still wait (the caller flushes them now)."""
        await stop_tasks(list(self._timers.values()))
        self._timers.clear()
        return list(self.waiting)
