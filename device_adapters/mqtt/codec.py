"""MQTT 3.1.1 / 5 packets the bridge's own client needs, as pure functions over bytes.

Encode: CONNECT (clean start off, session expiry and Receive Maximum on v5), SUBSCRIBE (QoS 1),
PUBLISH, PUBACK, PINGREQ, DISCONNECT. Decode: the fixed header (`frame_at`), PUBLISH, CONNACK, SUBACK,
PUBACK. No I/O and no state: device_adapters/mqtt/protocol.py frames the stream, client.py keeps the
session. Malformed input raises `Malformed`. Spec: MQTT 5.0 (OASIS) §2-3; docs/transports/mqtt.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # v5: reason 0 (normal) with no properties; the session is kept
MAX_REMAINING = 268_435_455  # four bytes of variable length

# v5 property identifiers the client writes or reads (§2.2.2.2), and the size of each fixed-width one.
SESSION_EXPIRY, SERVER_KEEP_ALIVE, RECEIVE_MAXIMUM, REASON_STRING = 0x11, 0x13, 0x21, 0x1F
_FIXED = {0x01: 1, 0x02: 4, 0x11: 4, 0x13: 2, 0x17: 1, 0x18: 4, 0x19: 1, 0x21: 2, 0x22: 2, 0x23: 2,
          0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}
_LENGTH_PREFIXED = {0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F}  # UTF-8 string or binary data
_USER_PROPERTY, _SUBSCRIPTION_ID = 0x26, 0x0B


class Malformed(ValueError):
    """The bytes are not a valid MQTT packet: the connection must be closed."""


class Publish(NamedTuple):
    topic: bytes  # raw: the caller decides what an invalid UTF-8 topic means
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int  # 0 for QoS 0


@dataclass(frozen=True)
class Connack:
    session_present: bool
    reason: int  # 0: accepted (3.1.1 return codes 1-5, v5 reason codes >= 0x80: refused)
    receive_maximum: int = 65_535  # how many QoS 1 publishes of ours the server takes in flight
    server_keepalive: int | None = None  # v5: the server's keepalive overrides ours


# -- encoding ---------------------------------------------------------------------------------------------
def varint(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError(f"length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _binary(raw)


def _binary(raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError("a string or binary field is at most 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def connect(client_id: str, keepalive: int, *, v5: bool, username: str | None = None,
            password: str | None = None, session_expiry: int = 0, receive_maximum: int = 0) -> bytes:
    """CONNECT with clean start off (a persistent session). On v5 the session outlives the connection by
    `session_expiry` seconds and the server sends at most `receive_maximum` unacknowledged QoS 1 messages."""
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = b"\x00\x04MQTT" + bytes((5 if v5 else 4, flags)) + keepalive.to_bytes(2, "big")
    if v5:
        props = bytes((SESSION_EXPIRY,)) + session_expiry.to_bytes(4, "big")
        if receive_maximum:
            props += bytes((RECEIVE_MAXIMUM,)) + receive_maximum.to_bytes(2, "big")
        body += varint(len(props)) + props
    body += _utf8(client_id)
    if username is not None:
        body += _utf8(username)
    if password is not None:
        body += _binary(password.encode("utf-8"))
    return _packet(0x10, body)


def subscribe(mid: int, filters: list[str], *, v5: bool, qos: int = 1) -> bytes:
    body = mid.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    for topic_filter in filters:
        body += _utf8(topic_filter) + bytes((qos,))  # v5 options: no-local 0, retain-as-published 0, handling 0
    return _packet(0x82, body)


def publish(topic: str, payload: bytes, *, qos: int, retain: bool, mid: int = 0, v5: bool,
            dup: bool = False) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _utf8(topic) + (mid.to_bytes(2, "big") if qos else b"") + (b"\x00" if v5 else b"") + payload
    return _packet(first, body)


def with_dup(packet: bytes) -> bytes:
    """The same PUBLISH marked as a redelivery (sent again after a reconnect)."""
    return bytes((packet[0] | 0x08,)) + packet[1:]


def puback(mid: int) -> bytes:
    return b"\x40\x02" + mid.to_bytes(2, "big")  # v5: reason 0 may be left out (§3.4.2.1)


# -- decoding ---------------------------------------------------------------------------------------------
def frame_at(buf: bytes | bytearray, pos: int) -> tuple[int, int, int] | None:
    """The packet starting at `pos`: (first byte, start of its body, end of its body), or None when the
    buffer does not hold all of it yet."""
    size = len(buf)
    i = pos + 1
    length = shift = 0
    while True:
        if i >= size:
            return None
        byte = buf[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise Malformed("remaining length longer than four bytes")
    end = i + length
    if end > size:
        return None
    return buf[pos], i, end


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise Malformed("truncated variable length")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise Malformed("variable length longer than four bytes")


def decode_publish(first: int, body: bytes, *, v5: bool) -> Publish:
    qos = (first >> 1) & 3
    if qos == 3 or len(body) < 2:
        raise Malformed("PUBLISH with QoS 3 or no topic")
    n = int.from_bytes(body[0:2], "big")
    pos = 2 + n
    topic = body[2:pos]
    mid = 0
    if qos:
        mid = int.from_bytes(body[pos:pos + 2], "big")
        pos += 2
        if mid == 0:
            raise Malformed("PUBLISH with QoS > 0 and packet identifier 0")
    if v5:
        props, pos = decode_varint(body, pos)
        pos += props
    if pos > len(body):
        raise Malformed("PUBLISH shorter than its header")
    return Publish(topic, body[pos:], qos, bool(first & 1), bool(first & 8), mid)


def decode_connack(body: bytes, *, v5: bool) -> Connack:
    if len(body) < 2:
        raise Malformed("CONNACK too short")
    session_present, reason = bool(body[0] & 1), body[1]
    if not v5 or len(body) == 2:
        return Connack(session_present, reason)
    props = properties(body, 2)
    return Connack(session_present, reason, int(props.get(RECEIVE_MAXIMUM, 65_535)),
                   int(props[SERVER_KEEP_ALIVE]) if SERVER_KEEP_ALIVE in props else None)


def decode_suback(body: bytes, *, v5: bool) -> tuple[int, list[int]]:
    """(packet identifier, one reason code per filter: 0-2 granted QoS, >= 0x80 refused)."""
    if len(body) < 3:
        raise Malformed("SUBACK too short")
    pos = 2
    if v5:
        length, pos = decode_varint(body, 2)
        pos += length
    return int.from_bytes(body[0:2], "big"), list(body[pos:])


def decode_puback(body: bytes) -> int:
    if len(body) < 2:
        raise Malformed("PUBACK too short")
    return int.from_bytes(body[0:2], "big")


def properties(body: bytes, pos: int) -> dict[int, int | bytes]:
    """The v5 property block at `pos`: integer properties as int, strings and binary data as raw bytes
    (user properties and subscription identifiers are skipped)."""
    length, pos = decode_varint(body, pos)
    end = pos + length
    if end > len(body):
        raise Malformed("property block past the end of the packet")
    out: dict[int, int | bytes] = {}
    while pos < end:
        ident = body[pos]
        pos += 1
        if ident in _FIXED:
            width = _FIXED[ident]
            out[ident] = int.from_bytes(body[pos:pos + width], "big")
            pos += width
        elif ident in _LENGTH_PREFIXED:
            n = int.from_bytes(body[pos:pos + 2], "big")
            out[ident] = body[pos + 2:pos + 2 + n]
            pos += 2 + n
        elif ident == _USER_PROPERTY:
            for _ in range(2):
                pos += 2 + int.from_bytes(body[pos:pos + 2], "big")
        elif ident == _SUBSCRIPTION_ID:
            _, pos = decode_varint(body, pos)
        else:
            raise Malformed(f"unknown property 0x{ident:02x}")
    if pos != end:
        raise Malformed("property block overruns its length")
    return out
