"""Vendor payload codecs for LoRaWAN devices, used when the network server sent no decoded object.

Each codec is a pure function `(payload: bytes, f_port: int) -> dict` whose output uses the same keys
as the vendor's codec in the TTN device repository, so a profile's mappings work whether the decoded
object came from ChirpStack/TTN or from us. Written from the published byte layouts (Milesight WS101 and
Dragino LGT-92 user manuals), not from the vendors' code.

The `lorawan` decoder that uses them is in device_adapters/decoders/lorawan.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.devices.decoding import DECODE_WARNINGS, DecodeError

Codec = Callable[[bytes, int], dict[str, Any]]


def milesight_ws101(payload: bytes, f_port: int) -> dict[str, Any]:
    """Milesight WS101 smart button: channel id / channel type / value triples."""
    out: dict[str, Any] = {}
    i = 0
    while i + 2 < len(payload):
        channel, ctype, value = payload[i], payload[i + 1], payload[i + 2]
        if channel == 0x01 and ctype == 0x75:
            out["battery"] = value
        elif channel == 0xFF and ctype == 0x2E:
            press = {1: "short", 2: "long", 3: "double"}.get(value)
            if press is not None:
                out["button"] = press
        else:
            # Unknown channel: the vendor codec stops here too, since the value length is unknown.
            break
        i += 3
    return out


def _s32(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=True)


def dragino_lgt92(payload: bytes, f_port: int) -> dict[str, Any]:
    """Dragino LGT-92 GPS tracker, fPort 2 position frame (the SOS key is bit 0x40 of byte 8)."""
    if f_port != 2:
        raise DecodeError(f"LGT-92: fPort {f_port} is not a position frame")
    if len(payload) < 9:  # byte 8 holds the alarm bit: without it the frame says nothing
        raise DecodeError(f"LGT-92: position frame of {len(payload)} bytes is too short")
    out: dict[str, Any] = {
        "latitude": _s32(payload[0:4]) / 1e6,
        "longitude": _s32(payload[4:8]) / 1e6,
        "ALARM_status": "TRUE" if payload[8] & 0x40 else "FALSE",
    }
    if len(payload) < 11:  # truncated after the alarm byte: battery and mode are dropped, the alarm is not
        out[DECODE_WARNINGS] = ["battery", "mode"] if len(payload) < 10 else ["mode"]
        if len(payload) == 10:
            out["BatV"] = (((payload[8] & 0x3F) << 8) | payload[9]) / 1000
        return out
    out["BatV"] = (((payload[8] & 0x3F) << 8) | payload[9]) / 1000
    flags = payload[10]
    # The vendor JS tests `bytes[10] & 0xC0 == 0x40`, which JS parses as `bytes[10] & false`, so it
    # always reports "Disable"; we decode the two mode bits as the manual describes.
    out["MD"] = {0x00: "Disable", 0x40: "Move", 0x80: "Collide", 0xC0: "User"}[flags & 0xC0]
    out["LON"] = "ON" if flags & 0x20 else "OFF"
    out["FW"] = 160 + (flags & 0x1F)
    if len(payload) >= 15:
        out["Roll"] = _s32(b"\x00\x00" + payload[11:13]) / 100
        out["Pitch"] = _s32(b"\x00\x00" + payload[13:15]) / 100
    if len(payload) >= 16:
        out["hdop"] = payload[15] / 100 if payload[15] else 0
    if len(payload) >= 18:
        # Only present on newer firmware; the codec example's 16-byte frame has no altitude.
        out["altitude"] = ((payload[16] << 8) | payload[17]) / 100
    return out


CODECS: dict[str, Codec] = {
    "milesight_ws101": milesight_ws101,
    "dragino_lgt92": dragino_lgt92,
}


def run_codec(name: str, payload: bytes, f_port: int) -> dict[str, Any]:
    codec = CODECS.get(name)
    if codec is None:
        raise DecodeError(f"no LoRaWAN codec named {name!r}")
    return codec(payload, f_port)
