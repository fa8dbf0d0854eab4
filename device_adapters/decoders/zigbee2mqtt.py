"""zigbee2mqtt device state messages on `<base>/<friendly_name>[/availability|/action]`.

Vendor vocabularies drift, so the profile decides: its `mappings` cover fields such as `sos: true` or
`action: emergency`, and `options.actions` maps generic button words (single, double, hold ...) to a
kind or to `cancel`, per hardware model (a per-device override is a profile in an extra directory).
`action: ""` or `null` resets the property: it is never a cancel. There is no device timestamp unless
`last_seen` is enabled; when it is, it also makes a stable message id for dedupe of replays.

A profile with `options.hints` (the generated `zigbee2mqtt-fallback`, for devices registered without a
profile) names, in the alert's `suggested_profiles`, the catalogue profiles that would fit: by the model
zigbee2mqtt reports (`device.model`, with `include_device_information`), else by the action or SOS state
that raised it (docs/devices/catalogue.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from bridge.core.model import AlertKind
from bridge.devices.decoding import Decoded, DecodeError, Frame, UndeclaredKind, parse_json_object
from bridge.devices.profiles import apply_profile

if TYPE_CHECKING:
    from bridge.devices.profiles import DeviceProfile

Availability = Literal["online", "offline"]


def parse_availability(payload: bytes) -> Availability | None:
    """`{"state":"offline"}`, or the legacy plain `offline` of zigbee2mqtt 1.x."""
    text = payload.decode("utf-8", "replace").strip()
    state: Any = text
    if text.startswith("{"):
        try:
            state = json.loads(text).get("state")
        except (json.JSONDecodeError, AttributeError):
            return None
    return state if state in ("online", "offline") else None


def parse_last_seen(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)  # "epoch" format is milliseconds
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return None


def _action_events(doc: dict[str, Any], profile: DeviceProfile) -> list[Decoded]:
    action = doc.get("action")
    if not isinstance(action, str) or not action:
        return []  # "" and null are resets of the action property
    table: dict[str, str] = {str(k): str(v) for k, v in (profile.options.get("actions") or {}).items()}
    target = table.get(action)
    if target is None and profile.options.get("strip_endpoint_suffix", True) and "_" in action:
        target = table.get(action.rsplit("_", 1)[0])  # "single_left" on multi-endpoint devices
    if target is None:
        return []
    if target == "cancel":
        return [Decoded(action="cancel", reason=f"cancelled at the device ({action})")]
    try:
        kind = AlertKind(target)
    except ValueError:
        raise DecodeError(f"profile maps {action!r} to unknown kind {target!r}") from None
    if kind not in profile.kinds:
        raise UndeclaredKind(f"kind {kind.value!r} is not one this device may send")
    return [Decoded(action="alert", kind=kind)]


def suggested_profiles(doc: dict[str, Any], hints: Any) -> list[str]:
    """The profiles that would fit the device that sent `doc`, from a profile's `options.hints`. Pure."""
    if not isinstance(hints, dict):
        return []
    device = doc.get("device")
    model = device.get("model") if isinstance(device, dict) else None
    if isinstance(model, str) and isinstance(hints.get("model"), dict) and model in hints["model"]:
        return [str(hints["model"][model])]
    found: set[str] = set()
    action = doc.get("action")
    if isinstance(action, str) and isinstance(hints.get("action"), dict):
        found.update(str(p) for p in hints["action"].get(action) or ())
    for state, ids in (hints.get("state") or {}).items() if isinstance(hints.get("state"), dict) else ():
        if doc.get(state) is True:
            found.update(str(p) for p in ids or ())
    return sorted(found)


def _with_hints(events: list[Decoded], doc: dict[str, Any], hints: Any) -> list[Decoded]:
    if hints is None or not any(e.action == "alert" for e in events):
        return events
    fits = suggested_profiles(doc, hints)
    hint = fits or ["none in the catalogue: write one (docs/devices/index.md)"]
    return [e.model_copy(update={"attributes": {**e.attributes, "suggested_profiles": hint}})
            if e.action == "alert" else e for e in events]


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    sub = frame.meta.get("subtopic", "")
    if sub == "action":
        return []  # the plain-text copy of the state message's action; counting it would double a press
    if sub == "availability":
        state = parse_availability(frame.payload)
        if state is None:
            raise DecodeError("availability payload must be online or offline")
        if state == "offline" and profile.options.get("offline_alert") and AlertKind.device_offline in profile.kinds:
            return [Decoded(action="alert", kind=AlertKind.device_offline, reason="zigbee device went offline")]
        return [Decoded(action="heartbeat")] if state == "online" else []
    if sub:
        return []  # set/get echoes and other sub-topics are not device events
    doc = parse_json_object(frame.payload)
    events = apply_profile(doc, profile, frame.meta)
    have = {(e.action, e.kind) for e in events}
    for extra in _action_events(doc, profile):
        if (extra.action, extra.kind) not in have:
            events.append(extra)
    if len(events) > 1:
        events = [e for e in events if e.action != "unmatched"]
    if [e.action for e in events] == ["unmatched"] and not doc.get("action"):
        # A routine state report (battery, link quality) with no press in it: a sign of life, not an
        # unmatched event. A press no mapping covers (an action word) stays unmatched and is reported.
        events = [Decoded(action="heartbeat")]
    events = _with_hints(events, doc, profile.options.get("hints"))
    last_seen_raw = doc.get("last_seen")
    last_seen = parse_last_seen(last_seen_raw)
    attributes = {k: doc[k] for k in ("battery", "voltage", "linkquality", "action") if doc.get(k) is not None}
    out = []
    for ev in events:
        update: dict[str, Any] = {"attributes": {**attributes, **ev.attributes}}
        if ev.occurred_at is None and last_seen is not None:
            update["occurred_at"] = last_seen
        if ev.message_id is None and last_seen_raw is not None:
            # The same press replayed (retained state, QoS 1 redelivery) carries the same last_seen.
            update["message_id"] = f"{last_seen_raw}:{ev.action}:{ev.kind.value if ev.kind else ''}"
        out.append(ev.model_copy(update=update))
    return out
