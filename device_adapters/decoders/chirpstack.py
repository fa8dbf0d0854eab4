"""ChirpStack v4 MQTT integration events (JSON marshaler): `application/<app>/device/<deveui>/event/<e>`.

Only the v4 Protobuf-JSON mapping is accepted. v3 JSON (numeric application id, base64 `devEUI`,
`objectJSON` as a string) is refused with a reason rather than guessed at. Proto3 JSON leaves out
zero values, so `fCnt`, `fPort` and `confirmed` may be absent.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bridge.core.model import Location
from bridge.devices.decoding import Decoded, DecodeError, Frame, parse_json_object
from device_adapters.decoders.lorawan_mapping import map_uplink

if TYPE_CHECKING:
    from bridge.devices.profiles import DeviceProfile


@dataclass(frozen=True)
class Uplink:
    """One uplink, whichever network server it came from."""

    network: str
    event: str
    dev_eui: str | None
    message_id: str | None
    time: datetime | None
    f_port: int | None
    payload: bytes | None
    decoded: dict[str, Any] | None
    registry_location: Location | None = None
    network_location: Location | None = None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    # Python accepts at most microseconds; ChirpStack and TTN send nanoseconds.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]  # the fraction, not the zone's digits
        tz = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def b64(value: Any, what: str) -> bytes | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what} is not valid base64") from None


def hex_eui(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    if len(v) != 16 or any(c not in "0123456789abcdef" for c in v):
        return None
    return v


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_uplink(doc: dict[str, Any], event: str = "up") -> Uplink:
    if "applicationID" in doc or "devEUI" in doc or "objectJSON" in doc:
        raise DecodeError("ChirpStack v3 event format is not supported; use ChirpStack v4 (JSON)")
    info = doc.get("deviceInfo")
    if not isinstance(info, dict):
        raise DecodeError("ChirpStack event without deviceInfo")
    dev_eui = hex_eui(info.get("devEui"))
    if dev_eui is None:
        raise DecodeError("ChirpStack deviceInfo.devEui must be 16 hex digits")
    obj = doc.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise DecodeError("ChirpStack 'object' must be a JSON object")
    f_port = _int(doc.get("fPort"))
    if "fPort" in doc and f_port is None:
        raise DecodeError("ChirpStack fPort must be an integer")
    network_location = None
    loc = doc.get("location")
    if event == "location" and isinstance(loc, dict):
        try:
            network_location = Location(
                lat=loc.get("latitude"), lon=loc.get("longitude"), altitude_m=loc.get("altitude"),
                source="network",
            )
        except ValueError:
            raise DecodeError("ChirpStack location is out of range") from None
    dedup = doc.get("deduplicationId")
    return Uplink(
        network="chirpstack",
        event=event,
        dev_eui=dev_eui,
        message_id=str(dedup) if dedup else None,
        time=parse_time(doc.get("time")),
        f_port=f_port if f_port is not None else (0 if event == "up" else None),
        payload=b64(doc.get("data"), "data"),
        decoded=obj,
        network_location=network_location,
    )


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    """The `chirpstack` decoder: a v4 event (its type from meta `event`, default `up`)."""
    doc = parse_json_object(frame.payload)
    return map_uplink(parse_uplink(doc, frame.meta.get("event", "up")), profile, frame.meta)
