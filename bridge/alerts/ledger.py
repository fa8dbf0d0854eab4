"""The alert ledger: every write of an alert goes through here, in order, once.

One lock per device (held only while someone holds or awaits it), one `commit_with_retry` for the
versioned write another instance may win (re-read, re-apply, jittered backoff), the in-memory hand-over
of fresh contacts to the forwarder, status events on the bus, the platform's lifecycle events and text
messages, and the person's emergency contacts queued after the police contact. The intake rules that
decide *what* to write live in bridge/alerts/rules.py. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from bridge.alerts.emergency_contacts import Notifier, NotifyEvent, is_notify_route
from bridge.alerts.handoff import FreshContacts
from bridge.alerts.rules import AlertNotFound, Rejected, cancel_held, discreet, held_under_duress, message_text
from bridge.core.events import StatusBus, StatusEvent, TextMessage
from bridge.core.ids import new_id
from bridge.core.lifecycle import IllegalTransition, LifecycleEvent, next_state
from bridge.core.messages import MESSAGE_OUT
from bridge.core.model import Alert, Device, HistoryEntry, utcnow
from bridge.store.base import Change, ConcurrentUpdate, OutboxItem, Store, StoreError

log = logging.getLogger("sosbridge.ledger")

T = TypeVar("T")
CONCURRENT_RETRIES = 12
# Seconds to wait before the n-th re-read after a lost versioned write (jittered, growing): two instances
# that keep colliding on one alert would otherwise re-read in lock-step and collide again.
CONFLICT_BACKOFF_S = 0.002


async def conflict_backoff(attempt: int) -> None:
    """Wait a little, at random, before retrying a write another instance won."""
    await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_S * (attempt + 1)))


class Ledger:
    def __init__(
        self, store: Store, bus: StatusBus, *, fresh: FreshContacts | None = None, notifier: Notifier | None = None,
        render_bodies: Callable[[Sequence[OutboxItem]], None] | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.fresh = fresh
        self.notifier = notifier
        # Renders each queued row's platform body (CAP, EIDO...) before its commit, so the store keeps it
        # with the row and no delivery attempt renders again (bridge/delivery/queued_bodies.py).
        self.render_bodies = render_bodies
        self._locks: dict[str, list[Any]] = {}  # device id -> [lock, holders and waiters]

    @contextlib.asynccontextmanager
    async def locked(self, device_id: str) -> AsyncIterator[None]:
        """One write per device at a time; the lock lives only while someone holds or awaits it, so
        memory does not grow with the number of devices ever heard."""
        entry = self._locks.get(device_id)
        if entry is None:
            entry = self._locks[device_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[device_id]

    @staticmethod
    async def commit_with_retry(attempt: Callable[[int], Awaitable[T]], what: str) -> T:
        """Run `attempt(n)` (read, decide, `commit`) until no other instance wrote the alert in between.

        Optimistic concurrency: the per-device lock only covers this process, so the store refuses a
        stale versioned write with ConcurrentUpdate and the attempt is made again on a fresh read."""
        for n in range(CONCURRENT_RETRIES):
            try:
                return await attempt(n)
            except ConcurrentUpdate:
                await conflict_backoff(n)
        raise StoreError(f"the alert kept changing under this {what}; retry")

    async def commit(self, change: Change, new_alert: bool = False) -> None:
        """One atomic, versioned write; then the fresh contacts go to the forwarder and it is woken."""
        if not new_alert:
            change.expected_version = change.alert.version
        change.alert.version += 1
        if self.render_bodies is not None and change.outbox:
            self.render_bodies(change.outbox)
        fresh = self.fresh
        claim = fresh.claim(change.outbox) if fresh is not None and change.outbox else None
        try:
            await self.store.commit(change)
        except BaseException:
            if fresh is not None and claim is not None:
                fresh.hand_over(claim, committed=False)
            raise
        if fresh is not None and claim is not None:
            for item in claim.items:
                item.alert = change.alert  # delivery never re-reads the alert it was committed with
            fresh.hand_over(claim, committed=True)

    def publish(self, alert: Alert, event: str, device: Device | None = None) -> None:
        """A status event for the device's channels; `device`: the record the caller holds, if any."""
        self.bus.publish(StatusEvent(alert.alert_id, alert.device_id, alert.tenant_id, alert.state, event,
                                     kind=alert.kind.value, covert=held_under_duress(alert),
                                     transport=alert.transport, device=device, version=alert.version))

    # -- the person's emergency contacts --------------------------------------------------------------
    def queue_notifications(
        self, change: Change, device: Device, event: NotifyEvent, only_routes: set[str] | None = None
    ) -> None:
        """Rows for the person's emergency contacts, appended after the police contact in the same change.
        A bug here must never cost the police contact: it is logged and the notifications are skipped."""
        if self.notifier is None or device.person is None or not device.person.emergency_contacts:
            return
        try:
            self.notifier.queue(change, device, event, time.time(), only_routes)
        except Exception as exc:
            log.error("emergency contact notifications failed", extra={"alert_id": change.alert.alert_id,
                                                                       "error": repr(exc)})

    async def told_routes(self, alert_id: str, device: Device) -> set[str]:
        """The emergency contacts' routes on which this alert was delivered: a cancel is told only to those
        (the rows still waiting are dropped with the cancel; one in flight just then is not followed)."""
        if self.notifier is None or device.person is None or not device.person.emergency_contacts:
            return set()
        return {o.route for o in await self.store.outbox_items(alert_id)
                if is_notify_route(o.route) and o.msg_type == "notify" and o.state == "delivered"
                and o.idempotency_key.startswith(f"{alert_id}:notify:alert:")}

    async def _notify_device(self, device_id: str, event: LifecycleEvent) -> Device | None:
        """The device record, when an ack or resolve may have emergency contacts to tell; None otherwise.
        A failed read costs the notifications, never the platform's transition."""
        if self.notifier is None or event not in (LifecycleEvent.ack, LifecycleEvent.resolve):
            return None
        try:
            device = await self.store.get_device(device_id)
        except StoreError as exc:
            log.warning("emergency contacts not read", extra={"device_id": device_id, "error": str(exc)})
            return None
        return device if device is not None and device.person and device.person.emergency_contacts else None

    # -- callbacks from the forwarder and the platform ------------------------------------------------
    async def lifecycle_event(
        self,
        alert_id: str,
        event: LifecycleEvent,
        actor: str,
        note: str = "",
        known: Alert | None = None,
        delivered_item: str | None = None,
    ) -> Alert:
        """Apply a platform or forwarder event. `known` is the alert as the caller just read it: it is
        used for the first attempt, and a stale copy only costs a retry (the write is versioned).
        `delivered_item` is the outbox row whose delivery caused the event, marked in the same write."""
        first = known if known is not None else await self.store.get_alert(alert_id)
        if first is None:
            raise AlertNotFound(alert_id)
        device = await self._notify_device(first.device_id, event)

        async def attempt(n: int) -> tuple[Alert, bool]:
            current = first if n == 0 else await self.store.get_alert(alert_id)
            if current is None:
                raise AlertNotFound(alert_id)
            try:
                new_state = next_state(current.state, event)
            except IllegalTransition as exc:
                if delivered_item is not None:
                    await self.store.mark_delivered(delivered_item, time.time())
                raise Rejected(str(exc), "illegal_transition") from exc
            if new_state == current.state:
                if delivered_item is not None:
                    await self.store.mark_delivered(delivered_item, time.time())
                return current, False
            now = utcnow()
            alert = current.model_copy(update={"state": new_state, "updated_at": now})
            history = HistoryEntry(at=now, event=event.value, state=new_state, detail={"by": actor, "note": note})
            change = Change(alert=alert, history=[history], urgent=True,
                            delivered_items=[delivered_item] if delivered_item else [], delivered_at=time.time())
            if device is not None and event in (LifecycleEvent.ack, LifecycleEvent.resolve):
                self.queue_notifications(change, device, "ack" if event == LifecycleEvent.ack else "resolve")
            await self.commit(change)
            return alert, True

        async with self.locked(first.device_id):
            alert, changed = await self.commit_with_retry(attempt, "transition")
        if changed and not cancel_held(alert):
            # A held alert's device was told it is cancelled: the status topic / CoAP observers keep that view.
            self.publish(alert, event.value)
        return alert

    async def platform_message(
        self, alert_id: str, text: str, *, language: str | None = None, audible: bool = False,
        actor: str = "platform",
    ) -> tuple[Alert, TextMessage]:
        """A text from the platform for the person: one history entry, written with the alert (refused for a
        closed alert; the state is unchanged), then published on the status bus for the device channels.
        `audible` is honoured for a silent or duress alert only when the device record allows it."""
        text = message_text(text)
        first = await self.store.get_alert(alert_id)
        if first is None:
            raise AlertNotFound(alert_id)

        async def attempt(n: int) -> tuple[Alert, TextMessage]:
            current = first if n == 0 else await self.store.get_alert(alert_id)
            if current is None:
                raise AlertNotFound(alert_id)
            if not current.is_open:
                raise Rejected(f"alert {alert_id!r} is {current.state.value}; it takes no messages", "alert_closed")
            quiet = discreet(current)
            loud = audible
            if loud and quiet:
                device = await self.store.get_device(current.device_id)
                loud = device is not None and device.audible_on_silent
            now = utcnow()
            message = TextMessage(
                message_id=new_id(), text=text, language=language or current.language, discreet=quiet,
                audible=loud, at=now.isoformat(),
            )
            alert = current.model_copy()
            entry = HistoryEntry(at=now, event=MESSAGE_OUT, state=alert.state, detail={
                "message_id": message.message_id, "text": text, "language": message.language,
                "discreet": quiet, "audible": loud, "by": actor,
            })
            await self.commit(Change(alert=alert, history=[entry], urgent=True))
            return alert, message

        async with self.locked(first.device_id):
            alert, message = await self.commit_with_retry(attempt, "message")
        # The alert's real state (for delivery records); device channels show only the text of this event.
        self.bus.publish(StatusEvent(alert.alert_id, alert.device_id, alert.tenant_id, alert.state, "message",
                                     text=message, version=alert.version))
        return alert, message
