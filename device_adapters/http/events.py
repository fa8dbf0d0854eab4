"""`GET /v1/alerts/{id}/events`: server-sent events for the device's app, within reserved bounds.

A long-lived stream must never take the capacity `POST /v1/alerts` and the platform callbacks need
(docs/operations/security.md, "Event streams"):

- at most `SOSBRIDGE_SSE_PER_ALERT` streams per device and alert, and `SOSBRIDGE_SSE_MAX_STREAMS` in all
  (start-up refuses more than half of `SOSBRIDGE_HTTP_LIMIT_CONCURRENCY`); beyond either: 429 with
  Retry-After, at once;
- each stream ends after `SOSBRIDGE_SSE_MAX_S` (the client reconnects; `retry:` tells it when);
- the backlog (the platform's texts already sent) is read once per alert and shared by the streams that
  open within BACKLOG_TTL_S; a stream keeps only the ids it sent, never the alert's history.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from bridge.alerts.pipeline import device_state
from bridge.core.events import STOPPING
from bridge.core.lifecycle import DEVICE_MESSAGES
from bridge.core.messages import MESSAGE_DELIVERY, conversation, delivered_over
from bridge.core.model import FINAL_STATES, Alert, HistoryEntry, device_kind, utcnow
from bridge.ingress.transport import AdapterContext
from bridge.store.base import Store

SSE_KEEPALIVE_S = 15.0
BACKLOG_TTL_S = 2.0
RECONNECT_MS = 5000


def status_body(alert: Alert) -> dict[str, Any]:
    state = device_state(alert)  # a held cancel (duress) reads as cancelled here too
    return {
        "alert_id": alert.alert_id,
        "state": state.value,
        "message": DEVICE_MESSAGES[state],
        "kind": device_kind(alert.kind),  # a duress alert reads as sos to whoever holds the device
        "escalation_count": alert.escalation_count,
        "updated_at": alert.updated_at.isoformat(),
    }


async def record_sent(store: Store, alert: Alert, message_ids: list[str], channel: str,
                      skip: set[str] | None = None) -> None:
    """One delivery record per message and channel (`sent`: the channel does not confirm receipt)."""
    now = utcnow()
    entries = [
        HistoryEntry(at=now, event=MESSAGE_DELIVERY, state=alert.state,
                     detail={"message_id": mid, "channel": channel, "status": "sent"})
        for mid in message_ids if mid not in (skip or set())
    ]
    if entries:
        await store.append_history(alert.alert_id, entries)


# The last event of a stream the bridge closes because it is stopping: reconnect after this many ms
# (to another instance behind the proxy, or this one restarted). docs/operations/stopping.md
SSE_STOP_RETRY_MS = 3000


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class StreamSlots:
    """Open streams per (device, alert) and in all. Pure bookkeeping."""

    def __init__(self, per_alert: int, total: int) -> None:
        self.per_alert = per_alert
        self.total = total
        self._open: Counter[tuple[str, str]] = Counter()
        self.count = 0

    def acquire(self, key: tuple[str, str]) -> str | None:
        """None: a slot is taken (release it); else the refusal's reason."""
        if self._open[key] >= self.per_alert:
            return "too_many_streams_for_alert"
        if self.count >= self.total:
            return "too_many_streams"
        self._open[key] += 1
        self.count += 1
        return None

    def release(self, key: tuple[str, str]) -> None:
        self._open[key] -= 1
        self.count -= 1
        if self._open[key] <= 0:
            del self._open[key]


class SlotResponse(StreamingResponse):
    """A stream that gives its slot back however it ends (finished, client gone, server stopping)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


Backlog = tuple[list[dict[str, Any]], frozenset[str]]  # platform messages in order, ids already sent over SSE


class BacklogCache:
    """The backlog of an alert, read from its history once and shared for `ttl_s` by the streams that open
    meanwhile (a reconnect storm costs one history read per alert, not one per stream). Bounded."""

    def __init__(self, ttl_s: float = BACKLOG_TTL_S, max_entries: int = 256) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, asyncio.Task[Backlog]]] = {}

    async def get(self, store: Store, alert_id: str) -> Backlog:
        now = time.monotonic()
        hit = self._entries.get(alert_id)
        if hit is None or now - hit[0] > self.ttl_s or (hit[1].done() and hit[1].exception() is not None):
            if len(self._entries) >= self.max_entries:
                self._entries = {k: v for k, v in self._entries.items() if now - v[0] <= self.ttl_s}
            hit = (now, asyncio.ensure_future(self._read(store, alert_id)))
            self._entries[alert_id] = hit
        return await asyncio.shield(hit[1])

    @staticmethod
    async def _read(store: Store, alert_id: str) -> Backlog:
        history = await store.history(alert_id)
        backlog = [m for m in conversation(history) if m["from"] == "platform"]
        return backlog, frozenset(delivered_over(history, "sse"))


async def event_stream(ctx: AdapterContext, alert: Alert, backlogs: BacklogCache,
                       max_s: float) -> AsyncIterator[bytes]:
    """`status` on every state change, `message` for every platform text (those already sent first); ends
    after a final state or after `max_s`."""
    deadline = time.monotonic() + max_s
    # Subscribe before reading, so nothing published meanwhile is missed (duplicates are skipped by id).
    async with ctx.bus.subscribe(until_stop=True) as queue:
        current = await ctx.store.get_alert(alert.alert_id) or alert
        yield f"retry: {RECONNECT_MS}\n".encode() + sse("status", status_body(current))
        backlog, delivered = await backlogs.get(ctx.store, alert.alert_id)
        sent = {m["message_id"] for m in backlog}
        # Recorded as it is handed to the stream (a client gone mid-write cannot be told apart anyway).
        await record_sent(ctx.store, current, [m["message_id"] for m in backlog], "sse", skip=set(delivered))
        for m in backlog:
            yield sse("message", m | {"alert_id": alert.alert_id}, m["message_id"])
        del backlog, delivered
        if not current.is_open:
            return
        while (left := deadline - time.monotonic()) > 0:
            try:
                ev = await asyncio.wait_for(queue.get(), min(SSE_KEEPALIVE_S, left))
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if ev.event == STOPPING:  # the bridge is stopping: end the stream, tell the client when to retry
                yield f"retry: {SSE_STOP_RETRY_MS}\n".encode() + sse("stopping", {"alert_id": alert.alert_id})
                return
            if ev.alert_id != alert.alert_id:
                continue
            if ev.text is not None:
                if ev.text.message_id not in sent:
                    sent.add(ev.text.message_id)
                    await record_sent(ctx.store, current, [ev.text.message_id], "sse")
                    yield sse("message", ev.text.body(alert.alert_id), ev.text.message_id)
                continue
            yield sse("status", {"alert_id": ev.alert_id, "state": ev.state.value, "message": ev.message,
                                 "event": ev.event})
            if ev.state in FINAL_STATES:
                return
        yield b"event: reconnect\ndata: {}\n\n"  # the stream's time is up: the app opens a new one
