"""OwnTracks phone app messages on `owntracks/<user>/<device>[/event]`.

OwnTracks has no SOS message. It is a location source: `location` and `transition` become location
updates (the device's last known position for its next alert), and a configurable trigger turns a
location into an alert: by default `t: "u"`, the user pressing "publish" in the app. `lwt` means the
phone lost its connection, which is not an emergency.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge.core.model import AlertKind, Location
from bridge.devices.decoding import DECODE_WARNINGS, Decoded, DecodeError, Frame, UndeclaredKind, parse_json_object

if TYPE_CHECKING:
    from bridge.devices.profiles import DeviceProfile

IGNORED_TYPES = frozenset(
    {"lwt", "waypoint", "waypoints", "card", "cmd", "configuration", "status", "steps", "beacon", "request"}
)


def _num(doc: dict[str, Any], key: str, warnings: list[str]) -> float | None:
    """A numeric field, or None; a value that is not a number is dropped and named in `warnings`."""
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        warnings.append(key)
        return None
    return float(v)


def _location(doc: dict[str, Any], default_accuracy_m: float | None, warnings: list[str]) -> Location | None:
    """The fix, or None when lat/lon are absent or unusable (then `warnings` names `location`)."""
    lat, lon = _num(doc, "lat", []), _num(doc, "lon", [])
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        warnings.append("location")
        return None
    tst = _num(doc, "tst", warnings)
    acc = _num(doc, "acc", warnings)
    vel = _num(doc, "vel", warnings)
    cog = _num(doc, "cog", warnings)
    try:
        fix_time = datetime.fromtimestamp(tst, UTC) if tst is not None else None
    except (OverflowError, OSError, ValueError):
        warnings.append("time")
        fix_time = None
    return Location(
        lat=lat,
        lon=lon,
        # `acc` is the phone's own accuracy estimate; omitted when 0, so fall back to the profile default.
        accuracy_m=acc if acc and acc > 0 else default_accuracy_m,
        altitude_m=_num(doc, "alt", warnings),
        source="wifi" if doc.get("conn") == "w" and acc and acc > 100 else "gnss",
        fix_time=fix_time,
        speed_mps=vel / 3.6 if vel is not None else None,
        heading_deg=cog if cog is None or 0 <= cog <= 360 else None,
    )


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    doc = parse_json_object(frame.payload)
    kind_of = doc.get("_type")
    if not isinstance(kind_of, str):
        raise DecodeError("OwnTracks message without _type")
    if kind_of == "encrypted":
        raise DecodeError("encrypted OwnTracks payloads are not supported; disable encryption for the bridge")
    if kind_of in IGNORED_TYPES or kind_of not in ("location", "transition"):
        return []
    opts = profile.options
    warnings: list[str] = []
    location = _location(doc, opts.get("default_accuracy_m"), warnings)
    tst = doc.get("tst")
    attributes: dict[str, Any] = {k: doc[k] for k in ("tid", "batt", "t", "event", "desc", "rid", "conn") if k in doc}
    if warnings:
        attributes[DECODE_WARNINGS] = sorted(set(warnings))
    trigger = doc.get("t")
    sos_triggers = [str(t) for t in opts.get("sos_triggers", ["u"])]
    is_alert = kind_of == "location" and trigger is not None and str(trigger) in sos_triggers
    if kind_of == "transition":
        regions = [str(r) for r in opts.get("sos_regions", [])]
        is_alert = bool(regions) and (doc.get("desc") in regions or doc.get("rid") in regions)
    if is_alert:
        kind = AlertKind(opts.get("sos_kind", "sos"))
        if kind not in profile.kinds:
            raise UndeclaredKind(f"kind {kind.value!r} is not one this device may send")
        return [
            Decoded(
                action="alert",
                kind=kind,
                location=location,
                silent=bool(opts.get("silent", False)),
                message_id=f"{kind_of}:{tst}:{trigger}" if tst is not None else None,
                occurred_at=location.fix_time if location else None,
                attributes=attributes,
                reason=f"OwnTracks trigger {trigger!r}" if kind_of == "location" else "OwnTracks region event",
            )
        ]
    if location is None:
        raise DecodeError("OwnTracks location without a usable lat and lon")  # not an alarm: nothing left
    return [
        Decoded(
            action="location",
            location=location,
            message_id=f"{kind_of}:{tst}:{doc.get('created_at', '')}" if tst is not None else None,
            occurred_at=location.fix_time if location else None,
            attributes=attributes,
        )
    ]
