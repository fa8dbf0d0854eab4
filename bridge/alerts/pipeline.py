"""`Pipeline.submit()`: the one path every adapter hands its observations to.

resolve device → normalise → dedupe on transport message id → escalate into an open alert → locate →
enrich from the registry → persist alert + history + outbox row in one transaction → return, and only
then may the adapter acknowledge the device. A store failure propagates as `StoreError` so the adapter
answers with an error (and the device retries) instead of acknowledging an alert that is not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from bridge.alerts.emergency_contacts import Notifier, NotifyEvent, is_notify_route
from bridge.alerts.message_rate import MessageRate
from bridge.core.contact import Contact, ContactMessage, MsgType, build_contact
from bridge.core.events import StatusBus, StatusEvent, TextMessage
from bridge.core.geo import enrich_location
from bridge.core.lifecycle import IllegalTransition, LifecycleEvent, needs_stand_down, next_state
from bridge.core.messages import MESSAGE_IN, MESSAGE_OUT, BadText, clean_message
from bridge.core.model import (
    ALWAYS_SILENT_KINDS,
    DECODE_WARNINGS,
    DEFAULT_SEVERITY,
    LIFE_SAFETY_KINDS,
    Alert,
    AlertKind,
    AlertState,
    ContactStatus,
    Device,
    HistoryEntry,
    Location,
    Observation,
    Severity,
    new_id,
    utcnow,
)
from bridge.infra.metrics import Metrics
from bridge.infra.ratelimit import TokenBuckets
from bridge.store.base import Change, ConcurrentUpdate, DuplicateMessage, OutboxItem, Store, StoreError

log = logging.getLogger("sosbridge.pipeline")

Outcome = Literal["created", "escalated", "duplicate", "updated", "cancelled", "recorded"]
KindPolicy = Callable[[Device], frozenset[AlertKind] | None]
# Which platform routes a contact goes to, given the routes earlier contacts of its alert went to.
RouteSelector = Callable[[Contact, list[str]], list[str]]
DEFAULT_ROUTE = "default"
CONCURRENT_RETRIES = 12
# Seconds to wait before the n-th re-read after a lost versioned write (jittered, growing): two instances
# that keep colliding on one alert would otherwise re-read in lock-step and collide again.
CONFLICT_BACKOFF_S = 0.002
DEDUPE_CACHE_SIZE = 200_000
MAX_UPDATE_DEFER_S = 600.0
CLOCK_SKEW_S = 60.0
# Raised by the bridge about a device (supervision, gateways), not sent by it: no profile declares them.
BRIDGE_RAISED_KINDS = frozenset({AlertKind.check_in_missed, AlertKind.device_offline})
# The update a platform receives instead of a stand-down when a silent alert is "cancelled" at the device.
DURESS_CANCEL_REASON = "cancel requested at the device during a duress alert"
# Kinds that signal coercion when raised or folded in silently (a duress is one however it arrives).
COERCION_KINDS = (AlertKind.panic, AlertKind.sos)


async def conflict_backoff(attempt: int) -> None:
    """Wait a little, at random, before retrying a write another instance won."""
    await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_S * (attempt + 1)))


class FreshHandoff(Protocol):
    def claim_fresh(self, items: list[OutboxItem]) -> list[OutboxItem]: ...
    def hand_over(self, items: list[OutboxItem], committed: bool) -> None: ...
    def wake(self) -> None: ...


class Rejected(Exception):
    """The observation cannot be accepted; `reason` is safe to show the sender."""

    def __init__(self, reason: str, code: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class UnknownDevice(Rejected):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is not registered", "unknown_device")


class AlertNotFound(Rejected):
    def __init__(self, alert_id: str) -> None:
        super().__init__(f"alert {alert_id!r} not found", "not_found")


@dataclass(frozen=True)
class SubmitResult:
    alert_id: str | None
    outcome: Outcome
    state: AlertState | None


def _age_s(when: datetime | None, now: datetime) -> float | None:
    """How old a fix is; unknown (None) for one "from the future" beyond clock skew (a device clock that is
    wrong, or an NMEA time without a date read as today's)."""
    if when is None:
        return None
    age = (now - when).total_seconds()
    return None if age < -CLOCK_SKEW_S else max(0.0, age)


def replaces_fix(current: Location | None, incoming: Location) -> bool:
    """Whether a location update replaces the alert's location. Pure. A stale (last-known) fix never
    replaces a live one, and a fix older than the one the alert has never replaces it: the platform must
    not see the person jump back to where they were."""
    if current is None or not current.has_coordinates or current.last_known:
        return True
    if current.source == "registered_address":
        return True
    if incoming.last_known:
        return False
    return not (incoming.fix_time and current.fix_time and incoming.fix_time < current.fix_time)


def locate(fix: Location | None, device: Device, now: datetime, max_last_known_age_s: float) -> Location | None:
    """Device fix; else last known (flagged, with its age); else the registered address. Pure."""
    if fix is not None and (fix.has_coordinates or fix.civic is not None):
        return enrich_location(fix.model_copy(update={"age_s": _age_s(fix.fix_time, now)}))
    last = device.last_location
    if last is not None and last.has_coordinates:
        age = _age_s(last.fix_time or device.last_seen, now)
        if age is None or age <= max_last_known_age_s:
            return enrich_location(last.model_copy(update={"last_known": True, "source": "last_known", "age_s": age}))
    if device.registered_address is not None:
        return enrich_location(device.registered_address.model_copy(update={"source": "registered_address"}))
    return None


def escalation_counts(value: Any) -> dict[str, int]:
    """Escalation kinds as {kind: presses}; alerts stored before counts were kept hold a list."""
    if isinstance(value, dict):
        return {str(k): int(v) for k, v in value.items()}
    counts: dict[str, int] = {}
    for kind in value or []:
        counts[str(kind)] = counts.get(str(kind), 0) + 1
    return counts


def should_escalate(open_alert: Alert, kind: AlertKind) -> bool:
    """A repeated press folds into the open alert; a new emergency never hides behind a housekeeping one."""
    if kind == open_alert.kind:
        return True
    return kind in LIFE_SAFETY_KINDS and open_alert.kind in LIFE_SAFETY_KINDS


def held_under_duress(alert: Alert) -> bool:
    """The one rule every channel's cancel goes by (docs/voice/duress.md). An alert is never stood down from
    the device side when it, or anything folded into it, is a coercion signal: a duress, or a silent panic
    / SOS. Whoever coerces the person can make them press or say "cancel". A silent fall or medical alert
    alone is not a coercion signal and stays cancellable by the wearer ("I'm OK").

    Read from what every store keeps (the silent flag, `attributes.escalation_kinds`), so it survives a
    restart and holds alerts folded before this rule. The silent flag is one per alert: a silent alert
    with a panic or SOS folded in is held even if another press was the silent one (it errs on holding)."""
    folded = escalation_counts(alert.attributes.get("escalation_kinds"))
    if alert.kind == AlertKind.duress or folded.get(AlertKind.duress.value):
        return True
    coercion = alert.kind in COERCION_KINDS or any(folded.get(kind.value) for kind in COERCION_KINDS)
    return alert.silent and coercion


def silent_from_start(alert: Alert) -> bool:
    """A coercion alert nobody at the device ever heard being raised: a cancel of it is answered as if there
    were nothing to cancel (docs/voice/duress.md). One raised aloud and made silent later answers
    "cancelled", which is what whoever is with the person heard asked for."""
    return held_under_duress(alert) and not alert.attributes.get("silenced_by_escalation")


def cancel_held(alert: Alert) -> bool:
    """A cancel was asked for at the device and held (`held_under_duress`): the device side has been told
    the alert is cancelled, and every device-facing view keeps saying so (`device_state`)."""
    return bool(alert.attributes.get("cancel_requests_under_duress"))


def discreet(alert: Alert) -> bool:
    """Messages on this alert must make no sound at the person's end: a silent alert, a duress one, or
    one where a cancel was held under duress."""
    return alert.silent or held_under_duress(alert) or cancel_held(alert)


def message_text(text: str | None) -> str:
    try:
        return clean_message(text or "")
    except BadText as exc:
        raise Rejected(str(exc), "invalid_text") from exc


def device_state(alert: Alert) -> AlertState:
    """The state the device side is shown: `cancelled` once a cancel was held, the real state otherwise."""
    return AlertState.cancelled if cancel_held(alert) else alert.state


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
        self.message_rate = message_rate  # the person's texts: a burst, then coalesced (message_rate.py)
        self._locks: dict[str, list[Any]] = {}  # device id -> [lock, holders and waiters]
        # Dedupe keys known to be stored (positives only: the store stays the authority), newest last.
        self._seen: OrderedDict[str, str] = OrderedDict()
        # The forwarder: woken after a commit that queued contacts, and handed brand-new alerts'
        # first contacts in memory (see Forwarder.claim_fresh), so it need not poll or lease them.
        self.forwarder: FreshHandoff | None = None
        # The person's own emergency contacts (bridge/notify.py): queued after the police contact.
        self.notifier: Notifier | None = None

    @contextlib.asynccontextmanager
    async def _lock(self, device_id: str) -> AsyncIterator[None]:
        """One observation per device at a time; the lock lives only while someone holds or awaits it,
        so memory does not grow with the number of devices ever heard."""
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
        log.info(
            "accepted",
            extra={"alert_id": result.alert_id, "device_id": obs.device_id, "outcome": result.outcome},
        )
        return result

    def _dedupe_key(self, obs: Observation, message_id: str) -> str:
        return f"{obs.device_id}|{obs.transport}|{message_id}"

    async def _submit(self, obs: Observation, known_device: Device | None = None) -> SubmitResult:
        keys = [self._dedupe_key(obs, m) for m in dict.fromkeys([obs.message_id, *obs.also_message_ids]) if m]
        unkeyed = max(0, obs.presses - len(keys))  # presses that carried no message id
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
        async with self._lock(obs.device_id):
            known: str | None = None
            unseen: list[str] = []
            if len(keys) == 1 and not unkeyed:
                # One press, one key: the commit itself refuses a stored key (DuplicateMessage), so the
                # common case (a new message) costs no read here.
                unseen = fresh
            for key in fresh if not unseen else []:
                existing = await self.store.alert_for_dedupe(key)
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
            for attempt in range(CONCURRENT_RETRIES):
                try:
                    if obs.action == "alert":
                        return await self._alert(obs, device, dedupe_key, extra_keys)
                    if obs.action == "cancel":
                        return await self._cancel(obs, device, dedupe_key)
                    if obs.action in ("location", "restore"):
                        return await self._update(obs, device, dedupe_key)
                    if obs.action == "message":
                        return await self._message(obs, device, dedupe_key)
                    return await self._heartbeat(obs, device)
                except DuplicateMessage as dup:
                    if dedupe_key is not None:
                        self._remember(dedupe_key, dup.alert_id)
                    return await self._duplicate(dup.alert_id)
                except ConcurrentUpdate:
                    await conflict_backoff(attempt)  # then re-read the alert and apply the observation again
            raise StoreError("the alert kept changing under this update; retry")

    def _remember(self, dedupe_key: str, alert_id: str) -> None:
        self._seen[dedupe_key] = alert_id
        self._seen.move_to_end(dedupe_key)
        if len(self._seen) > DEDUPE_CACHE_SIZE:
            self._seen.popitem(last=False)

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

        location = locate(obs.location, device, now, self.last_known_max_age_s)
        severity = obs.severity or DEFAULT_SEVERITY[obs.kind]
        status: ContactStatus = obs.status or (device.status if device.status != "actual" else self.default_status)
        alert = Alert(
            alert_id=new_id(),
            tenant_id=device.tenant_id,
            device_id=device.device_id,
            kind=obs.kind,
            severity=severity,
            silent=obs.silent or obs.kind in ALWAYS_SILENT_KINDS,
            status=status,
            state=AlertState.received,
            occurred_at=obs.occurred_at or now,
            received_at=now,
            updated_at=now,
            transport=obs.transport,
            auth=obs.auth,
            location=location,
            language=obs.language or (device.person.language if device.person else None),
            verified=obs.verified,
            dedupe_key=dedupe_key,
            # Presses folded in before the first commit (a burst arriving together) count as escalations.
            escalation_count=obs.presses - 1,
            attributes=dict(obs.attributes),
            raw=obs.raw,
        )
        history = [
            HistoryEntry(
                at=now,
                event="received",
                state=alert.state,
                detail={"transport": obs.transport, "kind": obs.kind.value, "message_id": obs.message_id,
                        "presses": obs.presses},
            )
        ]
        change = Change(
            alert=alert,
            history=history,
            dedupe_key=dedupe_key,
            extra_dedupe_keys=extra_keys,
            check_open_alert=True,
            expected_open_alert=open_alert.alert_id if open_alert is not None else None,
            first_alert=obs.kind in LIFE_SAFETY_KINDS,
        )
        self._queue_contact(change, device, "alert", obs.reason)
        self._queue_notifications(change, device, "alert")  # after the police contact, never instead
        if obs.location is not None and obs.location.has_coordinates:
            change.device_location = (device.device_id, obs.location)
        await self._commit(change, new_alert=True)
        self._publish(alert, "received")
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
        assert obs.kind is not None
        alert = alert.model_copy(deep=True)
        alert.escalation_count += obs.presses
        alert.severity = max(alert.severity.raised(), obs.severity or Severity.unknown, key=lambda s: s.rank)
        silenced = not alert.silent and (obs.silent or obs.kind in ALWAYS_SILENT_KINDS)
        alert.silent = alert.silent or silenced
        if silenced:
            # Raised audibly, made silent later (a duress phrase after "I need help"): the device side saw it.
            alert.attributes["silenced_by_escalation"] = True
        alert.updated_at = now
        # Counts per kind, not a list per press: a contact's size must not grow with a flood.
        kinds = escalation_counts(alert.attributes.get("escalation_kinds"))
        kinds[obs.kind.value] = kinds.get(obs.kind.value, 0) + obs.presses
        alert.attributes["escalation_kinds"] = kinds
        # The update contact names what *this* frame dropped (docs/devices/partial-frames.md).
        if dropped := obs.attributes.get(DECODE_WARNINGS):
            alert.attributes[DECODE_WARNINGS] = dropped
        else:
            alert.attributes.pop(DECODE_WARNINGS, None)
        change = Change(alert=alert, dedupe_key=dedupe_key, extra_dedupe_keys=extra_keys)
        if obs.location is not None and obs.location.has_coordinates:
            alert.location = locate(obs.location, device, now, self.last_known_max_age_s)
            change.device_location = (device.device_id, obs.location)
        change.history.append(
            HistoryEntry(
                at=now,
                event="escalated",
                state=alert.state,
                detail={"kind": obs.kind.value, "count": alert.escalation_count, "presses": obs.presses,
                        "transport": obs.transport},
            )
        )
        reason = f"escalation: repeated {obs.kind.value} (press {alert.escalation_count + 1})"
        self._queue_update(change, device, reason)
        await self._commit(change)
        self._publish(alert, "escalated")
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
        told = await self._told_routes(alert.alert_id, device)
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
            self._queue_notifications(change, device, "cancel", told)
        await self._commit(change)
        self._publish(alert, "cancelled")
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
                        kind=alert.kind.value)
        )
        return SubmitResult(alert.alert_id, "cancelled", AlertState.cancelled)

    async def _update(self, obs: Observation, device: Device, dedupe_key: str | None) -> SubmitResult:
        alert = await self._target(obs)
        now = utcnow()
        if alert is None or not alert.is_open:
            # No open alert: the fix becomes the device's last known position for the next alert.
            if obs.location is not None and obs.location.has_coordinates:
                await self.store.touch_device(device.device_id, now, obs.location)
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
            if obs.location.has_coordinates:
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
        async with self._lock(device_id):
            batch = self.message_rate.take(alert_id)
            if not batch:
                return
            try:
                for attempt in range(CONCURRENT_RETRIES):
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
                    try:
                        await self._commit(change)
                        return
                    except ConcurrentUpdate:
                        await conflict_backoff(attempt)
                raise StoreError("the alert kept changing")
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
        await self.store.touch_device(device.device_id, utcnow(), obs.location)
        return SubmitResult(None, "recorded", None)

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
        current = known if known is not None else await self.store.get_alert(alert_id)
        if current is None:
            raise AlertNotFound(alert_id)
        device = await self._notify_device(current.device_id, event)
        async with self._lock(current.device_id):
            for attempt in range(CONCURRENT_RETRIES):
                if attempt:
                    current = await self.store.get_alert(alert_id)
                    assert current is not None
                try:
                    new_state = next_state(current.state, event)
                except IllegalTransition as exc:
                    if delivered_item is not None:
                        await self.store.mark_delivered(delivered_item, time.time())
                    raise Rejected(str(exc), "illegal_transition") from exc
                if new_state == current.state:
                    if delivered_item is not None:
                        await self.store.mark_delivered(delivered_item, time.time())
                    return current
                now = utcnow()
                alert = current.model_copy(update={"state": new_state, "updated_at": now})
                history = HistoryEntry(at=now, event=event.value, state=new_state, detail={"by": actor, "note": note})
                change = Change(alert=alert, history=[history], urgent=True,
                                delivered_items=[delivered_item] if delivered_item else [], delivered_at=time.time())
                if device is not None and event in (LifecycleEvent.ack, LifecycleEvent.resolve):
                    self._queue_notifications(change, device, "ack" if event == LifecycleEvent.ack else "resolve")
                try:
                    await self._commit(change)
                    break
                except ConcurrentUpdate:
                    await conflict_backoff(attempt)
            else:
                raise StoreError("the alert kept changing under this transition; retry")
        if not cancel_held(alert):
            # A held alert's device was told it is cancelled: the status topic / CoAP observers keep that view.
            self._publish(alert, event.value)
        return alert

    async def platform_message(
        self, alert_id: str, text: str, *, language: str | None = None, audible: bool = False,
        actor: str = "platform",
    ) -> tuple[Alert, TextMessage]:
        """A text from the platform for the person: one history entry, written with the alert (refused for a
        closed alert; the state is unchanged), then published on the status bus for the device channels.
        `audible` is honoured for a silent or duress alert only when the device record allows it."""
        text = message_text(text)
        current = await self.store.get_alert(alert_id)
        if current is None:
            raise AlertNotFound(alert_id)
        async with self._lock(current.device_id):
            for attempt in range(CONCURRENT_RETRIES):
                if attempt:
                    current = await self.store.get_alert(alert_id)
                    assert current is not None
                if not current.is_open:
                    raise Rejected(f"alert {alert_id!r} is {current.state.value}; it takes no messages",
                                   "alert_closed")
                quiet = discreet(current)
                if audible and quiet:
                    device = await self.store.get_device(current.device_id)
                    audible = device is not None and device.audible_on_silent
                now = utcnow()
                message = TextMessage(
                    message_id=new_id(), text=text, language=language or current.language, discreet=quiet,
                    audible=audible, at=now.isoformat(),
                )
                alert = current.model_copy()
                entry = HistoryEntry(at=now, event=MESSAGE_OUT, state=alert.state, detail={
                    "message_id": message.message_id, "text": text, "language": message.language,
                    "discreet": quiet, "audible": audible, "by": actor,
                })
                try:
                    await self._commit(Change(alert=alert, history=[entry], urgent=True))
                    break
                except ConcurrentUpdate:
                    await conflict_backoff(attempt)
            else:
                raise StoreError("the alert kept changing under this message; retry")
        # The alert's real state (for delivery records); device channels show only the text of this event.
        self.bus.publish(StatusEvent(alert.alert_id, alert.device_id, alert.tenant_id, alert.state, "message",
                                     text=message))
        return alert, message

    # -- helpers --------------------------------------------------------------------------------------
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

    async def _told_routes(self, alert_id: str, device: Device) -> set[str]:
        """The emergency contacts' routes on which this alert was delivered: a cancel is told only to those
        (the rows still waiting are dropped with the cancel; one in flight just then is not followed)."""
        if self.notifier is None or device.person is None or not device.person.emergency_contacts:
            return set()
        return {o.route for o in await self.store.outbox_items(alert_id)
                if is_notify_route(o.route) and o.msg_type == "notify" and o.state == "delivered"
                and o.idempotency_key.startswith(f"{alert_id}:notify:alert:")}

    def _queue_notifications(
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
        # Optimistic concurrency: another bridge instance sharing the store may have written this alert
        # since we read it (the per-device lock only covers this process). The store refuses a stale
        # write with ConcurrentUpdate and the caller re-reads and re-applies the observation.
        if not new_alert:
            change.expected_version = change.alert.version
        change.alert.version += 1
        fwd = self.forwarder
        claimed = fwd.claim_fresh(change.outbox) if fwd is not None and change.outbox else []
        try:
            await self.store.commit(change)
        except BaseException:
            if fwd is not None:
                fwd.hand_over(claimed, committed=False)
            raise
        if change.dedupe_key is not None:
            self._remember(change.dedupe_key, change.alert.alert_id)
        if fwd is not None and change.outbox:
            for item in claimed:
                item.alert = change.alert
            fwd.hand_over(claimed, committed=True)
            fwd.wake()

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

    def _publish(self, alert: Alert, event: str) -> None:
        self.bus.publish(StatusEvent(alert.alert_id, alert.device_id, alert.tenant_id, alert.state, event,
                                     kind=alert.kind.value, covert=held_under_duress(alert)))
