"""Bearer credentials for devices, the contact platform and administrators."""

from __future__ import annotations

import hmac
import time

from fastapi import HTTPException, Request

from bridge.app.refusal_audit import audit_refusal
from bridge.core.model import Device


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def unauthorised(reason: str) -> HTTPException:
    return HTTPException(
        status_code=401,
        detail={"error": "unauthorised", "reason": reason},
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_secret(request: Request, expected: str | None, what: str) -> None:
    token = bearer_token(request)
    if not expected:
        raise HTTPException(status_code=403, detail={"error": "disabled", "reason": f"no {what} credential is set"})
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise unauthorised(f"a valid {what} bearer token is required")


def client_source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def require_device(request: Request) -> Device:
    """Resolve the device from its bearer token. Repeated failures from one source get 429, so tokens
    can't be guessed at speed; a device with a valid token is never limited here."""
    return await device_for_credential(request, bearer_token(request))


async def device_for_credential(request: Request, token: str | None, transport: str = "http") -> Device:
    """The one device authentication of every HTTP route (wearable API, Home Assistant Assist ...): the
    device for `token`, else 401 — or 429 once the source is past the failed-credential limit — with the
    refusal counted and audited (one row per source and interval)."""
    runtime = request.app.state.runtime
    source = client_source(request)
    device: Device | None = await runtime.store.device_for_token(token) if token else None
    if device is not None:
        return device
    reason = "unauthenticated" if token is None else "bad_credentials"
    now = time.monotonic()
    # The limiter first: a source past its limit costs a counter, never a store write. The audit gets
    # one row per source per interval (bridge.security.RefusalAudit), however fast the refusals come.
    allowed = runtime.auth_failures.allow(source, now)
    await audit_refusal(runtime, source, reason if allowed else "rate_limited", now)
    # One reason per refusal: the answer the source got (401 for the credential, 429 for the limit).
    runtime.metrics.rejected(transport, reason if allowed else "auth_rate_limited")
    if not allowed:
        wait = max(1, int(runtime.auth_failures.retry_after(source)) + 1)
        raise HTTPException(
            status_code=429,
            detail={"error": "rate_limited", "reason": "too many failed credentials from this source"},
            headers={"Retry-After": str(wait)},
        )
    if token is None:
        raise unauthorised("a device bearer token is required")
    raise unauthorised("the device token is not valid")
