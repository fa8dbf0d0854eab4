"""In-process fan-out of alert state changes, so adapters can tell the device (status topic, observe).

`StatusBus.close()` is the bridge stopping (docs/operations/stopping.md): a subscriber that asked for
`until_stop=True` (an event stream to a client) then receives `stopping_event()` once, and at once if it
subscribes after the close, so it can end its stream with a retry hint instead of holding the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cachetools import LRUCache

from bridge.core.lifecycle import DEVICE_MESSAGES
from bridge.core.model import AlertState, Device


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
    # The transport that raised the alert: a channel can tell its own devices without reading the store.
    transport: str | None = None
    # The device record as the intake had it just now (in memory only): a channel deciding whether the
    # device is one of its own needs no store read (issue 27: one read per alert raised over HTTP).
    device: Device | None = field(default=None, compare=False, repr=False)
    # The alert's version once the write this event follows was committed: a device channel never shows an
    # older one after a newer (the event of a commit in one process can arrive after a later commit's
    # event from another: intake processes). None: not from a versioned write.
    version: int | None = None

    @property
    def message(self) -> str:
        return DEVICE_MESSAGES[self.state]


STATUS_VERSIONS = 10_000  # alerts whose newest published version StatusBus remembers
STOPPING = "bridge_stopping"  # StatusEvent.event of the one event `close()` gives `until_stop` subscribers


def stopping_event() -> StatusEvent:
    return StatusEvent(alert_id="", device_id="", tenant_id="", state=AlertState.received, event=STOPPING)


class StatusBus:
    def __init__(self, queue_size: int = 1000) -> None:
        # The newest version published per alert (bounded: an alert not heard of for 10,000 others has
        # settled long since, and forgetting it only lets a late event through).
        self._versions: LRUCache[str, int] = LRUCache(STATUS_VERSIONS)
        self._subscribers: set[asyncio.Queue[StatusEvent]] = set()
        self._until_stop: set[asyncio.Queue[StatusEvent]] = set()
        self._queue_size = queue_size
        self.closed = False

    def close(self) -> None:
        """The bridge is stopping: tell every `until_stop` subscriber (and any later one) once."""
        self.closed = True
        for q in list(self._until_stop):
            self._tell_stopping(q)

    @staticmethod
    def _tell_stopping(q: asyncio.Queue[StatusEvent]) -> None:
        while True:  # the stop must get through: drop queued echoes (their state is in the store) for it
            try:
                q.put_nowait(stopping_event())
                return
            except asyncio.QueueFull:
                q.get_nowait()

    def publish(self, event: StatusEvent) -> None:
        if event.version is not None and event.text is None:
            newest = self._versions.get(event.alert_id)
            if newest is not None and event.version < newest:
                # A state older than one already published (its event came late): the retained status
                # would go backwards, e.g. `forwarded` after `cancelled`. Texts are never dropped.
                return
            self._versions[event.alert_id] = event.version
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                # A slow listener loses status echoes, never alerts: the state is in the store.
                q.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, until_stop: bool = False) -> AsyncIterator[asyncio.Queue[StatusEvent]]:
        q: asyncio.Queue[StatusEvent] = asyncio.Queue(self._queue_size)
        self._subscribers.add(q)
        if until_stop:
            self._until_stop.add(q)
            if self.closed:
                self._tell_stopping(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)
            self._until_stop.discard(q)
