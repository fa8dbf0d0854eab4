"""Intake rules: pure functions that read an observation, a device and an alert and decide.

No I/O, no clock and no id of their own (the caller passes `now` and the new alert's id): where a fix
comes from, whether a press folds into an open alert, the `Change` a new alert or an escalation makes,
when a cancel is held under duress, what the device side is shown. The pipeline
(bridge/alerts/pipeline.py) applies them; the ledger (bridge/alerts/ledger.py) writes what they decide.
See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.core.geo import enrich_location
from bridge.core.messages import BadText, clean_message
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
)
from bridge.devices.fixage import CLOCK_SKEW_S, replaces_last_location
from bridge.store.base import Change

# Raised by the bridge about a device (supervision, gateways), not sent by it: no profile declares them.
BRIDGE_RAISED_KINDS = frozenset({AlertKind.check_in_missed, AlertKind.device_offline})
# The update a platform receives instead of a stand-down when a silent alert is "cancelled" at the device.
DURESS_CANCEL_REASON = "cancel requested at the device during a duress alert"
# Kinds that signal coercion when raised or folded in silently (a duress is one however it arrives).
COERCION_KINDS = (AlertKind.panic, AlertKind.sos)


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


def press_ids(message_id: str | None, also: Sequence[str], presses: int) -> tuple[list[str], int]:
    """The distinct message ids of a (folded) observation and how many of its presses carried none. Pure.

    A press repeated with its message id (a broker or device retransmission folded in beside its original)
    is the same press: it adds no key and is never counted as a press without an id, so a storm of repeats
    can never look like new presses (an escalation) whether the original is stored, in flight or long
    forgotten by memory (the store's dedupe key answers then). docs/limits.md
    """
    listed = [m for m in (message_id, *also) if m]
    ids = list(dict.fromkeys(listed))
    return ids, max(0, presses - len(listed))


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


def new_alert_change(
    obs: Observation, device: Device, now: datetime, *, alert_id: str, dedupe_key: str | None,
    extra_keys: list[str], open_alert_id: str | None, default_status: ContactStatus, max_last_known_age_s: float,
) -> Change:
    """The change a first alert makes: the alert, its `received` history and the device's new fix; the
    caller adds the contacts. `open_alert_id` is the device's open alert as read (the write is refused if
    another instance opened one meanwhile). Pure."""
    assert obs.kind is not None
    status: ContactStatus = obs.status or (device.status if device.status != "actual" else default_status)
    alert = Alert(
        alert_id=alert_id,
        tenant_id=device.tenant_id,
        device_id=device.device_id,
        kind=obs.kind,
        severity=obs.severity or DEFAULT_SEVERITY[obs.kind],
        silent=obs.silent or obs.kind in ALWAYS_SILENT_KINDS,
        status=status,
        state=AlertState.received,
        occurred_at=obs.occurred_at or now,
        received_at=now,
        updated_at=now,
        transport=obs.transport,
        auth=obs.auth,
        location=locate(obs.location, device, now, max_last_known_age_s),
        language=obs.language or (device.person.language if device.person else None),
        verified=obs.verified,
        dedupe_key=dedupe_key,
        # Presses folded in before the first commit (a burst arriving together) count as escalations.
        escalation_count=obs.presses - 1,
        attributes=dict(obs.attributes),
        raw=obs.raw,
    )
    history = [HistoryEntry(at=now, event="received", state=alert.state, detail={
        "transport": obs.transport, "kind": obs.kind.value, "message_id": obs.message_id, "presses": obs.presses,
    })]
    change = Change(alert=alert, history=history, dedupe_key=dedupe_key, extra_dedupe_keys=extra_keys,
                    check_open_alert=True, expected_open_alert=open_alert_id,
                    first_alert=obs.kind in LIFE_SAFETY_KINDS)
    if obs.location is not None and replaces_last_location(device.last_location, obs.location):
        change.device_location = (device.device_id, obs.location)
    return change


def escalation_change(
    open_alert: Alert, obs: Observation, device: Device, now: datetime, *, dedupe_key: str | None,
    extra_keys: list[str], max_last_known_age_s: float,
) -> tuple[Change, str]:
    """The change a repeated press makes to the open alert (counts, severity, silence, location) and the
    reason its update contact gives; the caller adds the contact. `open_alert` is not modified. Pure."""
    assert obs.kind is not None
    alert = open_alert.model_copy(deep=True)
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
        alert.location = locate(obs.location, device, now, max_last_known_age_s)
        if replaces_last_location(device.last_location, obs.location):
            change.device_location = (device.device_id, obs.location)
    change.history.append(HistoryEntry(at=now, event="escalated", state=alert.state, detail={
        "kind": obs.kind.value, "count": alert.escalation_count, "presses": obs.presses, "transport": obs.transport,
    }))
    return change, f"escalation: repeated {obs.kind.value} (press {alert.escalation_count + 1})"
