"""The `lorawan` decoder: accepts a ChirpStack v4 or a The Things Stack v3 uplink envelope (sniffed, or
named by the frame's `network` meta), picks the decoded object (network server's, else our codec's), and
maps it with the device profile. See docs/transports/mqtt.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.devices.decoding import Decoded, Frame, parse_json_object
from device_adapters.decoders import chirpstack, ttn
from device_adapters.decoders.lorawan_mapping import map_uplink

if TYPE_CHECKING:
    from bridge.devices.profiles import DeviceProfile


def _envelope(frame: Frame, doc: dict[str, Any]) -> Any:
    network = frame.meta.get("network")
    if network == "ttn" or (network is None and "end_device_ids" in doc):
        return ttn.parse_uplink(doc)
    return chirpstack.parse_uplink(doc, frame.meta.get("event", "up"))


def decode_uplink(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    doc = parse_json_object(frame.payload)
    return map_uplink(_envelope(frame, doc), profile, frame.meta)
