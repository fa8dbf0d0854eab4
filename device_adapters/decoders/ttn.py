"""The Things Stack v3 (TTN/TTI) MQTT uplinks: `v3/<app>[@<tenant>]/devices/<device>/up`.

Snake_case JSON with empty fields omitted. `uplink_message.locations.user` with `SOURCE_REGISTRY` is
where the device was registered, so it is only ever used as a registered address, never as a fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.core.model import Location
from bridge.devices.decoding import Decoded, DecodeError, Frame, parse_json_object
from device_adapters.decoders.chirpstack import Uplink, b64, hex_eui, parse_time
from device_adapters.decoders.lorawan_mapping import map_uplink

if TYPE_CHECKING:
    from bridge.devices.profiles import DeviceProfile


def _registry_location(msg: dict[str, Any]) -> Location | None:
    locations = msg.get("locations")
    if not isinstance(locations, dict):
        return None
    for loc in locations.values():
        if not isinstance(loc, dict) or loc.get("source") != "SOURCE_REGISTRY":
            continue
        try:
            return Location(
                lat=loc.get("latitude"),
                lon=loc.get("longitude"),
                altitude_m=loc.get("altitude"),
                source="registered_address",
            )
        except ValueError:
            return None
    return None


def parse_uplink(doc: dict[str, Any]) -> Uplink:
    ids = doc.get("end_device_ids")
    if not isinstance(ids, dict):
        raise DecodeError("TTN message without end_device_ids")
    msg = doc.get("uplink_message")
    if not isinstance(msg, dict):
        raise DecodeError("TTN message without uplink_message (only uplinks are accepted)")
    decoded = msg.get("decoded_payload")
    if decoded is not None and not isinstance(decoded, dict):
        raise DecodeError("TTN decoded_payload must be a JSON object")
    f_port = msg.get("f_port", 0)
    if not isinstance(f_port, int) or isinstance(f_port, bool):
        raise DecodeError("TTN f_port must be an integer")
    corr = doc.get("correlation_ids")
    message_id = None
    if isinstance(corr, list):
        message_id = next((c for c in corr if isinstance(c, str) and c.startswith("as:up:")), None)
    return Uplink(
        network="ttn",
        event="up",
        dev_eui=hex_eui(ids.get("dev_eui")),
        message_id=message_id,
        time=parse_time(msg.get("received_at")) or parse_time(doc.get("received_at")),
        f_port=f_port,
        payload=b64(msg.get("frm_payload"), "frm_payload"),
        decoded=decoded,
        registry_location=_registry_location(msg),
    )


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    """The `ttn` decoder."""
    return map_uplink(parse_uplink(parse_json_object(frame.payload)), profile, frame.meta)
