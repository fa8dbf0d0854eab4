"""In-process fan-out of alert state changes, so adapters can tell the device (status topic, observe)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bridge.core.lifecycle import DEVICE_MESSAGES
from bridge.core.model import AlertState


@dataclass(frozen=True)
class TextMessage:
    """A platform message for the person (bridge/core/messages.py); `discreet`: show it without any sound."""

    message_id: str
    text: str
    language: str | None
    discreet: bool
    audible: bool
    at: str

    def body(self, alert_id: str) -> dict[str, object]:
        return {"alert_id": alert_id, "message_id": self.message_id, "from": "platform", "text": self.text,
                "language": self.language, "discreet": self.discreet, "at": self.at}


@dataclass(frozen=True)
class StatusEvent:
    alert_id: str
    device_id: str
    tenant_id: str
    state: AlertState
    event: str
    # Set for event "message" (the state is unchanged): a text for the person, not a status change.
    text: TextMessage | None = None
    kind: str | None = None  # the alert's kind, for channels whose status document names it (CoAP)
    # A coercion signal (duress, silent panic): indicators others can see or hear at the device (the
    # retained MQTT status topic behind a button's LED or a satellite) must show nothing of it.
    covert: bool = False

    @property
    def message(self) -> str:
        return DEVICE_MESSAGES[self.state]


class StatusBus:
    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[StatusEvent]] = set()
        self._queue_size = queue_size

    def publish(self, event: StatusEvent) -> None:
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                # A slow listener loses status echoes, never alerts: the state is in the store.
                q.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[StatusEvent]]:
        q: asyncio.Queue[StatusEvent] = asyncio.Queue(self._queue_size)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)
