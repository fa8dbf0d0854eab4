"""Bearer credentials for devices, the contact platform and administrators."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from bridge.model import Device


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


async def require_device(request: Request) -> Device:
    runtime = request.app.state.runtime
    token = bearer_token(request)
    if token is None:
        runtime.metrics.rejected("http", "unauthenticated")
        raise unauthorised("a device bearer token is required")
    device: Device | None = await runtime.store.device_for_token(token)
    if device is None:
        runtime.metrics.rejected("http", "bad_credentials")
        raise unauthorised("the device token is not valid")
    return device
