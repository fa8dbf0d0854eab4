"""The SOS Bridge DIY frame: a tiny binary protocol for home-built panic buttons (hardware/diy-frame.md).

    SOF(A5 5A) LEN VER TYPE UNIT(4) BOOT(2) SEQ(2) DATA(LEN-10) CRC(2)

LEN counts VER..DATA; CRC is CRC-16/CCITT-FALSE over LEN..DATA, big-endian. Multi-byte integers are
big-endian. The bridge answers 06 SEQ(2) once the alert is stored, or 15 SEQ(2) CODE(1) when it is
refused; a device that hears neither retries with the same SEQ (the bridge de-duplicates on
UNIT-BOOT-SEQ, and BOOT changes on every power-up so a reset counter never collides with an old alert).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bridge.core.model import AlertKind, Location
from bridge.devices.decoding import DECODE_WARNINGS, ChecksumError, Decoded, DecodeError, Frame, UndeclaredKind
from bridge.devices.profiles import DeviceProfile

SOF = b"\xa5\x5a"
VERSION = 1
HEADER_LEN = 10  # VER TYPE UNIT BOOT SEQ
MAX_LEN = 64
ACK = 0x06
NAK = 0x15

TYPE_ALERT, TYPE_CANCEL, TYPE_HEARTBEAT, TYPE_LOCATION = 0x01, 0x02, 0x03, 0x04

KIND_CODES: dict[int, AlertKind] = {
    0x01: AlertKind.sos,
    0x02: AlertKind.panic,
    0x03: AlertKind.duress,
    0x04: AlertKind.fall,
    0x05: AlertKind.medical,
    0x06: AlertKind.fire,
    0x07: AlertKind.test,
    0x08: AlertKind.low_battery,
    0x09: AlertKind.tamper,
}
KIND_TO_CODE = {v: k for k, v in KIND_CODES.items()}

# NAK reason codes
NAK_REFUSED, NAK_UNKNOWN_DEVICE, NAK_BAD_FRAME = 0x01, 0x02, 0x03

FLAG_SILENT = 0x01



def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR (check 0x29B1)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@dataclass(frozen=True)
class Header:
    type: int
    unit: int
    boot: int
    seq: int
    data: bytes

    @property
    def unit_ref(self) -> str:
        return f"{self.unit:08X}"

    @property
    def message_id(self) -> str:
        return f"{self.unit:08X}-{self.boot:04X}-{self.seq:04X}"


def encode(type_: int, unit: int, boot: int, seq: int, data: bytes = b"") -> bytes:
    """Build a frame (what the firmware sends); used by the simulator and tests."""
    body = struct.pack(">BBIHH", VERSION, type_, unit, boot, seq) + data
    if len(body) > MAX_LEN:
        raise ValueError("frame too long")
    covered = bytes([len(body)]) + body
    return SOF + covered + struct.pack(">H", crc16_ccitt(covered))


def encode_alert(
    unit: int, boot: int, seq: int, kind: AlertKind, silent: bool = False,
    lat: float | None = None, lon: float | None = None, accuracy_m: int = 0,
) -> bytes:
    data = bytes([KIND_TO_CODE[kind], FLAG_SILENT if silent else 0])
    if lat is not None and lon is not None:
        data += struct.pack(">iiH", round(lat * 1e7), round(lon * 1e7), accuracy_m)
    return encode(TYPE_ALERT, unit, boot, seq, data)


def ack(seq: int) -> bytes:
    return bytes([ACK]) + struct.pack(">H", seq)


def nak(seq: int, code: int) -> bytes:
    return bytes([NAK]) + struct.pack(">HB", seq, code)


def split_frames(buffer: bytes) -> tuple[list[bytes], bytes, int]:
    """Cut complete frames out of a byte stream: (frames, unconsumed tail, bytes of garbage skipped).

    A frame whose CRC fails is returned as-is (decode() refuses it, so it is counted); noise before a
    SOF is skipped. Pure, so the framer is tested without a port.
    """
    frames: list[bytes] = []
    skipped = 0
    while True:
        start = buffer.find(SOF)
        if start < 0:
            keep = 1 if buffer.endswith(SOF[:1]) else 0
            skipped += len(buffer) - keep
            return frames, buffer[len(buffer) - keep :], skipped
        skipped += start
        buffer = buffer[start:]
        if len(buffer) < 3:
            return frames, buffer, skipped
        length = buffer[2]
        if length < HEADER_LEN or length > MAX_LEN:
            skipped += 1
            buffer = buffer[1:]  # a SOF lookalike inside noise: resynchronise on the next byte
            continue
        total = 2 + 1 + length + 2
        if len(buffer) < total:
            return frames, buffer, skipped
        frames.append(buffer[:total])
        buffer = buffer[total:]


def parse(raw: bytes) -> Header:
    if len(raw) < 2 + 1 + HEADER_LEN + 2 or not raw.startswith(SOF):
        raise DecodeError("not a DIY frame")
    length = raw[2]
    if len(raw) != 2 + 1 + length + 2:
        raise DecodeError("DIY frame length does not match LEN")
    covered, (crc,) = raw[2:-2], struct.unpack(">H", raw[-2:])
    if crc16_ccitt(covered) != crc:
        raise ChecksumError("DIY frame CRC does not verify")
    ver, type_, unit, boot, seq = struct.unpack(">BBIHH", raw[3 : 3 + HEADER_LEN])
    if ver != VERSION:
        raise DecodeError(f"unsupported DIY frame version {ver}")
    return Header(type_, unit, boot, seq, raw[3 + HEADER_LEN : -2])


def _location(data: bytes) -> Location | None:
    if len(data) < 10:
        return None
    lat_e7, lon_e7, acc = struct.unpack(">iiH", data[:10])
    lat, lon = lat_e7 / 1e7, lon_e7 / 1e7
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat_e7 == 0 and lon_e7 == 0):
        return None
    return Location(lat=lat, lon=lon, accuracy_m=float(acc) if acc else None, source="gnss")


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    h = parse(frame.payload)
    common = {"message_id": h.message_id, "device_ref": h.unit_ref, "attributes": {"unit": h.unit_ref}}
    if h.type == TYPE_ALERT:
        if len(h.data) < 2:
            raise DecodeError("alert frame without kind and flags")
        kind = KIND_CODES.get(h.data[0])
        if kind is None or kind not in profile.kinds:
            raise UndeclaredKind(f"kind code {h.data[0]:#04x} is not one this device may send")
        location = _location(h.data[2:])
        attributes: dict[str, object] = {"unit": h.unit_ref}
        if location is None and h.data[2:]:  # a location block is there but unusable: the alarm still goes
            attributes[DECODE_WARNINGS] = ["location"]
        return [
            Decoded(
                action="alert", kind=kind, silent=bool(h.data[1] & FLAG_SILENT), location=location,
                message_id=h.message_id, device_ref=h.unit_ref, attributes=attributes,
            )
        ]
    if h.type == TYPE_CANCEL:
        return [Decoded(action="cancel", reason="cancelled at the button", **common)]
    if h.type == TYPE_HEARTBEAT:
        attrs = {**common["attributes"], **({"battery_pct": h.data[0]} if h.data else {})}
        return [Decoded(action="heartbeat", message_id=None, device_ref=h.unit_ref, attributes=attrs)]
    if h.type == TYPE_LOCATION:
        loc = _location(h.data)
        if loc is None:
            raise DecodeError("location frame without a valid position")
        return [Decoded(action="location", location=loc, **common)]
    raise DecodeError(f"unknown DIY frame type {h.type:#04x}")
