"""Webhook signatures: X-SOSBridge-Signature is hex HMAC-SHA256 of the raw body with the platform secret."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-SOSBridge-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    return signature is not None and hmac.compare_digest(sign(body, secret), signature.strip())
