"""The `acme-binary` decoder: pure, bytes in, Decoded events out."""

from __future__ import annotations

from bridge.core.model import AlertKind, Location
from bridge.devices.decoding import DECODE_WARNINGS, Decoded, DecodeError, Frame
from bridge.devices.profiles import DeviceProfile
from sosbridge_acme.frame import FrameError, parse

EVENTS = {
    1: ("alert", AlertKind.sos),
    2: ("alert", AlertKind.fall),
    3: ("alert", AlertKind.low_battery),
    4: ("cancel", None),
    5: ("heartbeat", None),
}


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    try:
        f = parse(frame.payload)
    except FrameError as exc:
        raise DecodeError(str(exc)) from None
    if f.event not in EVENTS:
        raise DecodeError(f"unknown event code {f.event}")
    action, kind = EVENTS[f.event]
    location = None
    attributes: dict[str, object] = {"acme_seq": f.seq}
    if f.lat is not None and f.lon is not None:
        try:
            location = Location(lat=f.lat, lon=f.lon, accuracy_m=f.accuracy_m or None, source="gnss")
        except ValueError:
            # The alarm part (event code) is fine: raise it without the fix, and say what was dropped
            # (docs/devices/partial-frames.md). Only an unreadable alarm part refuses a frame.
            attributes[DECODE_WARNINGS] = ["location"]
    return [
        Decoded(
            action=action,
            kind=kind,
            location=location,
            message_id=f"{f.serial}:{f.seq}",  # type: ignore[arg-type]
            device_ref=f.serial,
            attributes=attributes,
        )
    ]
