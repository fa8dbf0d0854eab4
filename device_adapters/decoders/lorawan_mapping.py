"""The shared tail of the LoRaWAN decoders (ChirpStack, TTN and the envelope-sniffing `lorawan`): pick the
decoded object (the network server's, else our codec's), map it with the device profile, and fill in what
the envelope knows (DevEUI, frame counter, time, registry location). See docs/transports/mqtt.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.devices.decoding import DECODE_WARNINGS, Decoded
from bridge.devices.profiles import apply_profile
from device_adapters.decoders.lorawan_codecs import run_codec

if TYPE_CHECKING:
    from bridge.devices.profiles import DeviceProfile


def map_uplink(uplink: Any, profile: DeviceProfile, meta: dict[str, str]) -> list[Decoded]:
    """Shared tail of the ChirpStack and TTN decoders (uplink is a `chirpstack.Uplink`)."""
    obj = uplink.decoded
    codec = profile.options.get("codec")
    if codec and uplink.payload is not None and (obj is None or profile.options.get("prefer_codec")):
        obj = run_codec(str(codec), uplink.payload, uplink.f_port or 0)
    doc: dict[str, Any] = {
        "object": obj or {},
        "fPort": uplink.f_port,
        "network": uplink.network,
        "event": uplink.event,
        "location": uplink.network_location.model_dump() if uplink.network_location else None,
    }
    if isinstance(obj, dict) and isinstance(obj.get(DECODE_WARNINGS), list):
        doc[DECODE_WARNINGS] = obj[DECODE_WARNINGS]  # a codec's dropped fields (apply_profile names them)
    events = apply_profile(doc, profile, meta)
    out: list[Decoded] = []
    for i, ev in enumerate(events):
        update: dict[str, Any] = {"device_ref": ev.device_ref or uplink.dev_eui}
        if ev.message_id is None and uplink.message_id:
            update["message_id"] = uplink.message_id if i == 0 else f"{uplink.message_id}:{i}"
        if ev.occurred_at is None:
            update["occurred_at"] = uplink.time
        if ev.location is not None and ev.location.fix_time is None and uplink.time is not None:
            # The decoded fix is the uplink's: a delayed uplink's fix is as old as the uplink (fixage.py).
            update["location"] = ev.location.model_copy(update={"fix_time": uplink.time})
        if ev.location is None and ev.action == "alert" and uplink.registry_location is not None:
            # Where the device was registered, not where it is: flagged so nobody mistakes it for a fix.
            update["location"] = uplink.registry_location
        attrs = dict(ev.attributes)
        attrs.setdefault("f_port", uplink.f_port)
        attrs.setdefault("lns", uplink.network)
        update["attributes"] = attrs
        out.append(ev.model_copy(update=update))
    return out
