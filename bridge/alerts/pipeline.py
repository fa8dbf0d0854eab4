"""`Pipeline.submit()`: the intake, where the ingress hands every observation.

resolve device → normalise → dedupe on transport message id → escalate into an open alert → locate →
enrich from the registry (the pure rules are in bridge/alerts/rules.py) → a `Change`, written by the
ledger (bridge/alerts/ledger.py: alert + history + outbox rows in one transaction) → return, and only
then may the adapter acknowledge the device. A store failure propagates as `StoreError` so the adapter
answers with an error (and the device retries) instead of acknowledging an alert that is not stored.
See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cachetools import LRUCache

from bridge.alerts.emergency_contacts import Notifier
from bridge.alerts.ledger import Ledger
from bridge.alerts.message_rate import MessageRate
from bridge.alerts.rules import (
    BRIDGE_RAISED_KINDS,
    CLOCK_SKEW_S,
    COERCION_KINDS,
    DURESS_CANCEL_REASON,
    AlertNotFound,
    Rejected,
    UnknownDevice,
    cancel_held,
    device_state,
    discreet,
    escalation_change,
    escalation_counts,
    held_under_duress,
    locate,
    message_text,
    new_alert_change,
    press_ids,
    replaces_fix,
    should_escalate,
    silent_from_start,
)
from bridge.core.contact import Contact, ContactMessage, MsgType, build_contact
from bridge.core.events import StatusBus, StatusEvent
from bridge.core.ids import new_id
from bridge.core.lifecycle import IllegalTransition, LifecycleEvent, needs_stand_down, next_state
from bridge.core.messages import MESSAGE_IN
from bridge.core.model import (
    Alert,
    AlertKind,
    AlertState,
    ContactStatus,
    Device,
    HistoryEntry,
    Observation,
    utcnow,
)
from bridge.devices.fixage import replaces_last_location
from bridge.infra.metrics import Metrics
from bridge.infra.ratelimit import TokenBuckets
from bridge.store.base import Change, DuplicateMessage, OutboxItem, Store

# The intake rules, re-exported: callers name them from the pipeline they apply to.
__all__ = [
    "BRIDGE_RAISED_KINDS", "CLOCK_SKEW_S", "COERCION_KINDS", "DURESS_CANCEL_REASON", "AlertNotFound", "Pipeline",
    "Rejected", "SubmitResult", "UnknownDevice", "cancel_held", "device_state", "discreet", "escalation_counts",
    "held_under_duress", "locate", "message_text", "press_ids", "replaces_fix", "should_escalate",
    "silent_from_start",
]

log = logging.getLogger("sosbridge.pipeline")

Outcome = Literal["created", "escalated", "duplicate", "updated", "cancelled", "recorded"]
KindPolicy = Callable[[Device], frozenset[AlertKind] | None]
# Which platform routes a contact goes to, given the routes earlier contacts of its alert went to.
RouteSelector = Callable[[Contact, list[str]], list[str]]
DEFAULT_ROUTE = "default"
DEDUPE_CACHE_SIZE = 200_000
MAX_UPDATE_DEFER_S = 600.0


@dataclass(frozen=True)
class SubmitResult:
    alert_id: str | None
    outcome: Outcome
    state: AlertState | None


class Pipeline:
    def __init__(
        self,
        store: Store,
        bus: StatusBus,
        metrics: Metrics,
        *,
        public_url: str | None = None,
        default_status: ContactStatus = "actual",
        last_known_max_age_s: float = 24 * 3600,
        kind_policy: KindPolicy | None = None,
        route_selector: RouteSelector | None = None,
        update_limiter: TokenBuckets | None = None,
        ledger: Ledger | None = None,
        message_rate: MessageRate | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.public_url = public_url
        self.default_status = default_status
        self.last_known_max_age_s = last_known_max_age_s
        self.kind_policy = kind_policy
        self.route_selector = route_selector
        self.update_limiter = update_limiter
        # Every write goes through the ledger (locks, versioned commit, hand-over, status events).
        self.ledger = ledger if ledger is not None else Ledger(store, bus)
        self.message_rate = message_rate  # the person's texts: a burst, then coalesced (message_rate.py)
        # Dedupe keys known to be stored (positives only: the store stays the authority), newest last.
        self._seen: LRUCache[str, str] = LRUCache(DEDUPE_CACHE_SIZE)

    @property
    def notifier(self) -> Notifier | None:
        """The person's emergency contacts' queue (the GSM handler reads its SMS gateway from it)."""
        return self.ledger.notifier

    # -- entry point ----------------------------------------------------------------------------------
    async def submit(self, obs: Observation, device: Device | None = None) -> SubmitResult:
        """`device`: the registered device as the caller just read it (the ingress did), saving a read."""
        try:
            result = await self._submit(obs, device)
        except Rejected as exc:
            self.metrics.rejected(obs.transport, exc.code)
            log.info("rejected", extra={"device_id": obs.device_id, "reason": exc.code})
            raise
        if result.outcome in ("created", "escalated"):
            self.metrics.accepted(obs.transport, (obs.kind or AlertKind.sos).value, result.outcome)
        elif result.outcome == "duplicate":
            self.metrics.duplicate(obs.transport)
        # Per alert at DEBUG: the counters above say how many; INFO stays readable under a flood.
        log.debug(
            "accepted",
            extra={"alert_id": result.alert_id, "device_id": obs.device_id, "outcome": result.outcome},
        )
        return result

    def _dedupe_key(self, obs: Observation, message_id: str) -> str:
        return f"{obs.device_id}|{obs.transport}|{message_id}"

    async def _submit(self, obs: Observation, known_device: Device | None = None) -> SubmitResult:
        ids, unkeyed = press_ids(obs.message_id, obs.also_message_ids, obs.presses)
        keys = [self._dedupe_key(obs, m) for m in ids]
        fresh = [k for k in keys if k not in self._seen]
        if keys and not fresh and not unkeyed:
            # A storm of repeated presses is answered from memory, without touching the store (the
            # alert's current state is one GET /v1/alerts/{id} away for a device that wants it).
            return SubmitResult(self._seen[keys[0]], "duplicate", None)
        device = known_device if known_device is not None and known_device.device_id == obs.device_id else None
        if device is None:
            device = await self.store.get_device(obs.device_id)
        if device is None:
            if obs.verified:
                raise UnknownDevice(obs.device_id)
            # An unknown caller (e.g. a smart speaker not yet linked) still reaches the police, unverified.
            device = Device(device_id=obs.device_id, label="unverified caller")
        async with self.ledger.locked(obs.device_id):
            known: str | None = None
            unseen: list[str] = []
            if len(keys) == 1 and not unkeyed:
                # One press, one key: the commit itself refuses a stored key (DuplicateMessage), so the
                # common case (a new message) costs no read here.
                unseen = fresh
            else:
                # A backlog's presses: their keys read together (a read per key cost a flooding device's
                # backlog a round trip per press: 200 us each on Redis, issue 27).
                stored = await self.store.alerts_for_dedupe(fresh) if fresh else {}
                for key in fresh:
                    existing = stored.get(key)
                    if existing is None:
                        unseen.append(key)
                    else:
                        self._remember(key, existing)
                        known = known or existing
            if known is not None and not unseen and not unkeyed:
                return await self._duplicate(known)
            if keys and (len(unseen) != len(keys) or obs.presses != len(unseen) + unkeyed):
                obs = obs.model_copy(update={"presses": len(unseen) + unkeyed})
            dedupe_key = unseen[0] if unseen else None
            extra_keys = unseen[1:]
            async def attempt(_n: int) -> SubmitResult:
                # Each attempt re-reads the alert and applies the observation again.
                try:
                    return await self._apply(obs, device, dedupe_key, extra_keys)
                except DuplicateMessage as dup:
                    if dedupe_key is not None:
                        self._remember(dedupe_key, dup.alert_id)
                    return await self._duplicate(dup.alert_id)

            return await self.ledger.commit_with_retry(attempt, "update")

    async def _apply(
        self, obs: Observation, device: Device, dedupe_key: str | None, extra_keys: list[str]
    ) -> SubmitResult:
        if obs.action == "alert":
            return await self._alert(obs, device, dedupe_key, extra_keys)
        if obs.action == "cancel":
            return await self._cancel(obs, device, dedupe_key)
        if obs.action in ("location", "restore"):
            return await self._update(obs, device, dedupe_key)
        if obs.action == "message":
            return await self._message(obs, device, dedupe_key)
        return await self._heartbeat(obs, device)

    def _remember(self, dedupe_key: str, alert_id: str) -> None:
        self._seen[dedupe_key] = alert_id

    async def _duplicate(self, alert_id: str) -> SubmitResult:
        alert = await self.store.get_alert(alert_id)
        # A retried cancel that was held must not reveal the alert's real state to the device.
        return SubmitResult(alert_id, "duplicate", device_state(alert) if alert else None)

    # -- actions --------------------------------------------------------------------------------------
    async def _alert(
        self, obs: Observation, device: Device, dedupe_key: str | None, extra_keys: list[str]
    ) -> SubmitResult:
        if obs.kind is None:
            raise Rejected("an alert needs a kind", "missing_kind")
        if self.kind_policy is not None and obs.kind not in BRIDGE_RAISED_KINDS:
            allowed = self.kind_policy(device)
            if allowed is not None and obs.kind not in allowed:
                raise Rejected(
                    f"kind {obs.kind.value!r} is not declared by profile {device.profile_id!r}",
                    "undeclared_kind",
                )
        now = utcnow()
        open_alert = await self.store.open_alert_for_device(device.device_id)
        if open_alert is not None and should_escalate(open_alert, obs.kind):
            return await self._escalate(open_alert, obs, device, dedupe_key, extra_keys, now)

        change = new_alert_change(
            obs, device, now, alert_id=new_id(), dedupe_key=dedupe_key, extra_keys=extra_keys,
            open_alert_id=open_alert.alert_id if open_alert is not None else None,
            default_status=self.default_status, max_last_known_age_s=self.last_known_max_age_s,
        )
        alert = change.alert
        self._queue_contact(change, device, "alert", obs.reason)
        self.ledger.queue_notifications(change, device, "alert")  # after the police contact, never instead
        await self._commit(change, new_alert=True)
        self.ledger.publish(alert, "received", device)
        return SubmitResult(alert.alert_id, "created", alert.state)

    async def _escalate(
        self,
        alert: Alert,
        obs: Observation,
        device: Device,
        dedupe_key: str | None,
        extra_keys: list[str],
        now: datetime,
    ) -> SubmitResult:
        change, reason = escalation_change(alert, obs, device, now, dedupe_key=dedupe_key, extra_keys=extra_keys,
                                           max_last_known_age_s=self.last_known_max_age_s)
        alert = change.alert
        self._queue_update(change, device, reason)
        await self._commit(change)
        self.ledger.publish(alert, "escalated", device)
        return SubmitResult(alert.alert_id, "escalated", alert.state)

    async def _target(self, obs: Observation) -> Alert | None:
        if obs.alert_id is not None:
            alert = await self.store.get_alert(obs.alert_id)
            if alert is None or alert.device_id != obs.device_id:
                # Another device's alert is indistinguishable from a missing one.
                raise AlertNotFound(obs.alert_id)
            return alert
        return await self.store.open_alert_for_device(obs.device_id)

    async def _cancel(self, obs: Observation, device: Device, dedupe_key: str | None) -> SubmitResult:
        alert = await self._target(obs)
        if alert is None:
            raise Rejected("no open alert to cancel", "nothing_to_cancel")
        try:
            new_state = next_state(alert.state, LifecycleEvent.cancel)
        except IllegalTransition as exc:
            raise Rejected(str(exc), "illegal_transition") from exc
        if new_state == alert.state:
            return SubmitResult(alert.alert_id, "duplicate", alert.state)
        if held_under_duress(alert):
            return await self._hold_cancel(alert, obs, device, dedupe_key)
        stand_down = needs_stand_down(alert.state, await self.store.contact_sent(alert.alert_id))
        told = await self.ledger.told_routes(alert.alert_id, device)
        now = utcnow()
        alert = alert.model_copy(update={"state": new_state, "updated_at": now})
        change = Change(alert=alert, dedupe_key=dedupe_key, cancel_pending_outbox=True)
        change.history.append(
            HistoryEntry(
                at=now,
                event="cancelled",
                state=new_state,
                detail={"transport": obs.transport, "stand_down": stand_down, "by": obs.reason or "device"},
            )
        )
        if stand_down:
            self._queue_contact(change, device, "cancel", obs.reason or "stand-down: cancelled at the device")
        if told:
            self.ledger.queue_notifications(change, device, "cancel", told)
        await self._commit(change)
        self.ledger.publish(alert, "cancelled", device)
        return SubmitResult(alert.alert_id, "cancelled", alert.state)

    async def _hold_cancel(
        self, alert: Alert, obs: Observation, device: Device, dedupe_key: str | None
    ) -> SubmitResult:
        """A cancel from the device side while a duress or silent panic alert is open is never a stand-down:
        whoever forces the person can make them say or press "cancel". The alert stays open, the platform
        gets an update saying a cancel was requested at the device, and the device is answered as if the
        cancel had worked, so nothing there reveals the alert. Only the platform stands such an alert down
        (docs/voice/duress.md)."""
        now = utcnow()
        alert = alert.model_copy(deep=True)
        alert.updated_at = now
        held = int(alert.attributes.get("cancel_requests_under_duress") or 0)
        alert.attributes["cancel_requests_under_duress"] = held + 1
        change = Change(alert=alert, dedupe_key=dedupe_key)
        change.history.append(
            HistoryEntry(
                at=now, event="cancel_held", state=alert.state,
                detail={"transport": obs.transport, "by": obs.reason or "device"},
            )
        )
        self._queue_contact(change, device, "update", f"{DURESS_CANCEL_REASON} ({obs.transport})")
        await self._commit(change)
        # Devices following the status bus (MQTT status topic, CoAP observe) see what a cancel looks like.
        self.bus.publish(
            # Not covert: this pretend cancel is exactly what the device side is meant to show.
            StatusEvent(alert.alert_id, alert.device_id, alert.tenant_id, AlertState.cancelled, "cancelled",
                        kind=alert.kind.value, version=alert.version)
        )
        return SubmitResult(alert.alert_id, "cancelled", AlertState.cancelled)

    async def _update(self, obs: Observation, device: Device, dedupe_key: str | None) -> SubmitResult:
        alert = await self._target(obs)
        now = utcnow()
        if alert is None or not alert.is_open:
            # No open alert: the fix becomes the device's last known position for the next alert.
            fix = obs.location if replaces_last_location(device.last_location, obs.location) else None
            await self.store.touch_device(device.device_id, now, fix)  # seen, even when its fix is kept out
            return SubmitResult(alert.alert_id if alert else None, "recorded", alert.state if alert else None)
        alert = alert.model_copy(deep=True)
        alert.updated_at = now
        change = Change(alert=alert, dedupe_key=dedupe_key)
        if obs.action == "location":
            if obs.location is None:
                raise Rejected("a location update needs a location", "missing_location")
            if not replaces_fix(alert.location, obs.location):
                # Kept in the alert's history (nothing dropped silently), not sent: the alert's fix is fresher.
                change.history.append(HistoryEntry(at=now, event="location_kept", state=alert.state, detail={
                    "transport": obs.transport, "why": "the update's fix is older or stale; the alert's is kept",
                }))
                await self._commit(change)
                return SubmitResult(alert.alert_id, "updated", alert.state)
            alert.location = locate(obs.location, device, now, self.last_known_max_age_s)
            if replaces_last_location(device.last_location, obs.location):
                change.device_location = (device.device_id, obs.location)
            event, reason = "location", obs.reason or "location update"
        else:
            event, reason = "restore", obs.reason or f"restore reported by the device ({obs.transport})"
        change.history.append(HistoryEntry(at=now, event=event, state=alert.state, detail={"transport": obs.transport}))
        if event == "location":
            self._queue_update(change, device, reason)
        else:
            self._queue_contact(change, device, "update", reason)
        await self._commit(change)
        return SubmitResult(alert.alert_id, "updated", alert.state)

    async def _message(self, obs: Observation, device: Device, dedupe_key: str | None) -> SubmitResult:
        """The person's text for the platform: a `message` contact in order with the alert's others; the
        alert's state is unchanged."""
        text = message_text(obs.text)
        alert = await self._target(obs)
        if alert is None:
            raise Rejected("no open alert to send a message about", "nothing_open")
        if not alert.is_open:
            raise Rejected(f"alert {alert.alert_id!r} is {device_state(alert).value}", "alert_closed")
        now = utcnow()
        alert = alert.model_copy(deep=True)
        alert.updated_at = now
        message_id = obs.message_id or new_id()
        change = Change(alert=alert, dedupe_key=dedupe_key)
        change.history.append(HistoryEntry(
            at=now, event=MESSAGE_IN, state=alert.state,
            detail={"message_id": message_id, "text": text, "transport": obs.transport},
        ))
        message = ContactMessage(message_id=message_id, text=text, sent_at=obs.occurred_at or now,
                                 transport=obs.transport)
        rate = self.message_rate
        batch = rate.admit(device.device_id, alert.alert_id, message, time.monotonic()) if rate else [message]
        if batch:
            self._queue_contact(change, device, "message", "message from the person", message=message,
                                messages=batch if len(batch) > 1 else None)
        else:
            change.history[-1].detail["waiting"] = True  # over the rate: goes out with the next batch
        try:
            await self._commit(change)
        except BaseException:
            if rate is not None:
                rate.undo(alert.alert_id, batch, message)
            raise
        if rate is not None and not batch:
            rate.schedule(alert.alert_id, rate.delay(device.device_id),
                          lambda: self._flush_messages(alert.alert_id, device.device_id))
        return SubmitResult(alert.alert_id, "updated", device_state(alert))

    async def _flush_messages(self, alert_id: str, device_id: str) -> None:
        """The texts waiting for an alert, as one `message` contact listing them all in order."""
        assert self.message_rate is not None
        async with self.ledger.locked(device_id):
            batch = self.message_rate.take(alert_id)
            if not batch:
                return

            async def attempt(_n: int) -> None:
                alert = await self.store.get_alert(alert_id)
                device = await self.store.get_device(device_id)
                if alert is None or device is None:
                    log.warning("waiting texts dropped: alert or device gone",
                                extra={"alert_id": alert_id, "device_id": device_id, "texts": len(batch)})
                    return
                change = Change(alert=alert.model_copy(deep=True))
                change.alert.updated_at = utcnow()
                self._queue_contact(change, device, "message", f"{len(batch)} messages from the person",
                                    message=batch[-1], messages=batch)
                await self._commit(change)

            try:
                await self.ledger.commit_with_retry(attempt, "batch of texts")
            except BaseException:
                self.message_rate.put_back(alert_id, batch)
                raise

    async def stop(self) -> None:
        """Texts still waiting for their rate go out now (as one contact per alert): nothing is lost."""
        if self.message_rate is None:
            return
        for alert_id in await self.message_rate.stop():
            alert = await self.store.get_alert(alert_id)
            if alert is not None:
                with contextlib.suppress(Exception):  # logged by the store; the texts stay in the history
                    await self._flush_messages(alert_id, alert.device_id)

    async def _heartbeat(self, obs: Observation, device: Device) -> SubmitResult:
        fix = obs.location if replaces_last_location(device.last_location, obs.location) else None
        await self.store.touch_device(device.device_id, utcnow(), fix)
        return SubmitResult(None, "recorded", None)

    # -- helpers --------------------------------------------------------------------------------------
    def _queue_update(self, change: Change, device: Device, reason: str) -> None:
        """Escalation and location updates: at most the limiter's rate per device reach the platform.

        Every update replaces the ones still waiting (each contact carries the alert's whole state, so
        nothing is lost); over the rate, the new one waits until the limiter allows it. A flood thus
        becomes a few contacts with the latest counts, and every press is still recorded in the alert.
        """
        change.supersede_pending_updates = True
        due = 0.0
        if self.update_limiter is not None:
            now = time.monotonic()
            if not self.update_limiter.allow(change.alert.device_id, now):
                # Never later than MAX_UPDATE_DEFER_S: the platform always gets the latest state eventually.
                due = time.time() + min(self.update_limiter.retry_after(change.alert.device_id), MAX_UPDATE_DEFER_S)
                change.history[-1].detail["deferred_s"] = round(due - time.time(), 3)
        self._queue_contact(change, device, "update", reason, not_before=due)

    async def _commit(self, change: Change, new_alert: bool = False) -> None:
        await self.ledger.commit(change, new_alert)
        if change.dedupe_key is not None:
            self._remember(change.dedupe_key, change.alert.alert_id)

    def _queue_contact(
        self, change: Change, device: Device, msg_type: MsgType, reason: str | None, not_before: float = 0.0,
        message: ContactMessage | None = None, messages: list[ContactMessage] | None = None,
    ) -> None:
        alert = change.alert
        alert.contact_seq += 1
        contact = build_contact(alert, device, msg_type, alert.contact_seq, reason, self.public_url,
                                message=message, messages=messages)
        routes = self.route_selector(contact, alert.routes) if self.route_selector else []
        # With no route configured the contact still waits on the default route: the forwarder alarms and
        # fails critical contacts over, rather than the bridge silently dropping them.
        routes = routes or [DEFAULT_ROUTE]
        alert.routes = [*alert.routes, *(r for r in routes if r not in alert.routes)]
        payload, now = contact.to_json(), time.time()
        for route in routes:
            change.outbox.append(
                OutboxItem(
                    item_id=new_id(),
                    alert_id=alert.alert_id,
                    seq=alert.contact_seq,
                    msg_type=msg_type,
                    idempotency_key=contact.idempotency_key,
                    payload=payload,
                    critical=alert.critical,
                    created_at=now,
                    route=route,
                    next_attempt_at=not_before,
                )
            )
