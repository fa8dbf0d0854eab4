"""Webhook signatures (contract for platform implementers: docs/operations/security.md).

    X-SOSBridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<Idempotency-Key>.<raw body>")>

The timestamp and the idempotency key are signed with the body, so a captured request can neither be
replayed later (the receiver refuses a timestamp outside its tolerance window) nor be presented as a new
contact under another `Idempotency-Key` (the signature would not match). Several `v1=` entries may be
given (secret rotation); one matching is enough. The layout follows the payment-webhook convention
platforms already implement.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-SOSBridge-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300.0


class SignatureError(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def signed_payload(timestamp: int, idempotency_key: str, body: bytes) -> bytes:
    return f"{timestamp}.{idempotency_key}.".encode() + body


def mac(secret: str, timestamp: int, idempotency_key: str, body: bytes) -> str:
    return hmac.new(secret.encode(), signed_payload(timestamp, idempotency_key, body), hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, idempotency_key: str = "", timestamp: int | None = None) -> str:
    """The X-SOSBridge-Signature value for this body and idempotency key, signed now (or at `timestamp`).
    A request without an Idempotency-Key header is signed (and checked) with the empty key."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},{SCHEME}={mac(secret, t, idempotency_key, body)}"


def parse(signature: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    macs: list[str] = []
    for part in signature.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            if not value.isdigit() or len(value) > 12:
                raise SignatureError("bad_signature", "signature timestamp is not a unix time")
            timestamp = int(value)
        elif name == SCHEME:
            macs.append(value)
    if timestamp is None or not macs:
        raise SignatureError("bad_signature", "signature needs t=<unix> and v1=<hex>")
    return timestamp, macs


def check(
    body: bytes,
    secret: str,
    signature: str | None,
    idempotency_key: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Verify a signature; returns its timestamp, raises SignatureError (code, reason) otherwise."""
    if not signature:
        raise SignatureError("bad_signature", f"{SIGNATURE_HEADER} is missing")
    timestamp, macs = parse(signature)
    expected = mac(secret, timestamp, idempotency_key, body)
    if not any(hmac.compare_digest(expected, m) for m in macs):
        raise SignatureError("bad_signature", "signature does not match the body and idempotency key")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("stale_signature", f"signature timestamp is more than {tolerance_s:.0f} s away")
    return timestamp


def verify(
    body: bytes,
    secret: str,
    signature: str | None,
    idempotency_key: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    try:
        check(body, secret, signature, idempotency_key, tolerance_s, now)
    except SignatureError:
        return False
    return True
