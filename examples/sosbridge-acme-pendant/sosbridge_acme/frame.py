"""ACME P1 frame: 24 bytes, big-endian, CRC-16/CCITT (binascii.crc_hqx, init 0xFFFF) over bytes 0..21.

 0  2  magic b"AP"
 2  1  version (1)
 3  6  serial number
 9  1  event: 1 sos, 2 fall, 3 low battery, 4 cancel ("I'm OK"), 5 heartbeat
10  2  sequence number (wraps)
12  4  latitude  * 1e6 (signed; 0x7FFFFFFF = no fix)
16  4  longitude * 1e6 (signed)
20  2  accuracy in metres (95 %)
22  2  CRC
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

FRAME_LEN = 24
MAGIC = b"AP"
NO_FIX = 0x7FFFFFFF
ACK, NAK = 0x06, 0x15
_LAYOUT = struct.Struct(">2sB6sBHiiH")


class FrameError(ValueError):
    pass


@dataclass(frozen=True)
class AcmeFrame:
    serial: str
    event: int
    seq: int
    lat: float | None
    lon: float | None
    accuracy_m: int


def crc(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def parse(raw: bytes) -> AcmeFrame:
    if len(raw) != FRAME_LEN:
        raise FrameError(f"frame is {len(raw)} bytes, expected {FRAME_LEN}")
    body, (check,) = raw[:22], struct.unpack(">H", raw[22:])
    if crc(body) != check:
        raise FrameError(f"bad CRC: got {check:04x}, computed {crc(body):04x}")
    magic, version, serial, event, seq, lat, lon, acc = _LAYOUT.unpack(body)
    if magic != MAGIC or version != 1:
        raise FrameError("not an ACME P1 frame")
    has_fix = lat != NO_FIX
    return AcmeFrame(serial.hex(), event, seq, lat / 1e6 if has_fix else None, lon / 1e6 if has_fix else None, acc)


def build(serial: str, event: int, seq: int, lat: float | None = None, lon: float | None = None, acc: int = 0) -> bytes:
    lat_i = NO_FIX if lat is None else round(lat * 1e6)
    lon_i = 0 if lon is None else round(lon * 1e6)
    body = _LAYOUT.pack(MAGIC, 1, bytes.fromhex(serial), event, seq & 0xFFFF, lat_i, lon_i, acc)
    return body + struct.pack(">H", crc(body))
