"""Per-device request signing for CoAP: HMAC-SHA256 over the request with a timestamp and a counter.

A device signs every request and puts the signature in Uri-Query options:

    ?d=<device_id>&t=<unix seconds>&c=<counter>&m=<hex of the first 16 bytes of the MAC>

    MAC = HMAC-SHA256(key, "sosbridge-coap/1\\n" METHOD "\\n" PATH "\\n" d "\\n" t "\\n" c "\\n" || payload)

PATH is the Uri-Path joined with "/" and no leading slash ("alert", "alert/01J..."). The bridge refuses a
timestamp more than `window_s` from its clock and a counter not greater than the last one it accepted
from that device (kept durably in the store), so a captured request cannot be replayed, even after a
restart. Pure functions; the adapter does the storage.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

MAC_BYTES = 16
CONTEXT = b"sosbridge-coap/1\n"


class AuthError(ValueError):
    """Refuse with 4.01; the message is safe to show the device."""

    def __init__(self, message: str, code: str = "bad_auth") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Signed:
    device_id: str
    timestamp: int
    counter: int
    mac: str


def key_bytes(key: str) -> bytes:
    try:
        return bytes.fromhex(key)
    except ValueError:
        return key.encode()


def compute_mac(key: str, method: str, path: str, device_id: str, timestamp: int, counter: int, payload: bytes) -> str:
    message = CONTEXT + f"{method.upper()}\n{path}\n{device_id}\n{timestamp}\n{counter}\n".encode() + payload
    return hmac.new(key_bytes(key), message, hashlib.sha256).digest()[:MAC_BYTES].hex()


def sign_query(
    key: str, method: str, path: str, device_id: str, timestamp: int, counter: int, payload: bytes
) -> list[str]:
    mac = compute_mac(key, method, path, device_id, timestamp, counter, payload)
    return [f"d={device_id}", f"t={timestamp}", f"c={counter}", f"m={mac}"]


def parse_query(queries: tuple[str, ...] | list[str]) -> Signed:
    fields: dict[str, str] = {}
    for q in queries:
        name, _, value = q.partition("=")
        fields[name] = value
    try:
        return Signed(fields["d"], int(fields["t"]), int(fields["c"]), fields["m"].lower())
    except (KeyError, ValueError):
        raise AuthError("missing or malformed d, t, c, m query options") from None


def verify(
    signed: Signed, key: str, method: str, path: str, payload: bytes, now: float, window_s: float
) -> None:
    """MAC and clock checks; the counter check needs the store and is the caller's."""
    expected = compute_mac(key, method, path, signed.device_id, signed.timestamp, signed.counter, payload)
    if not hmac.compare_digest(expected, signed.mac):
        raise AuthError("bad signature")
    if abs(now - signed.timestamp) > window_s:
        raise AuthError("timestamp outside the accepted window", "stale")
