"""Bearer credentials for devices, the contact platform and administrators.

A device token is looked up through the ingress's registry cache (bridge/ingress/binding.py, DeviceCache):
a device sending again within `SOSBRIDGE_DEVICE_CACHE_S` costs no store read, and the device found is
the one the ingress then uses. The functions taking `runtime` and `source` serve the lean
`POST /v1/alerts` handler (bridge/app/api/lean.py); those taking a `Request` wrap them.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from fastapi import HTTPException, Request

from bridge.alerts.pipeline import AlertNotFound
from bridge.app.refusal_audit import audit_refusal
from bridge.app.security_settings import tenant_tokens
from bridge.core.model import Device


def bearer_token(request: Request) -> str | None:
    return bearer_from(request.headers.get("authorization", ""))


def bearer_from(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, or None. Pure."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def unauthorised(reason: str) -> HTTPException:
    return HTTPException(
        status_code=401,
        detail={"error": "unauthorised", "reason": reason},
        headers={"WWW-Authenticate": "Bearer"},
    )


def client_source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def scope_source(client: tuple[str, int] | list[Any] | None) -> str:
    """The source address of an ASGI scope's `client` (as `client_source` for a Request)."""
    return str(client[0]) if client else "unknown"


async def require_device(request: Request) -> Device:
    """Resolve the device from its bearer token. Repeated failures from one source get 429, so tokens
    can't be guessed at speed; a device with a valid token is never limited here."""
    return await device_for_credential(request, bearer_token(request))


async def device_for_credential(request: Request, token: str | None, transport: str = "http") -> Device:
    """The one device authentication of every HTTP route (wearable API, Home Assistant Assist ...): the
    device for `token`, else 401 — or 429 once the source is past the failed-credential limit — with the
    refusal counted and audited (one row per source and interval)."""
    return await device_for_token(request.app.state.runtime, token, client_source(request), transport)


async def device_for_token(runtime: Any, token: str | None, source: str, transport: str = "http") -> Device:
    """`device_for_credential` without a Request: the device for `token`, else the refusal (raised)."""
    if token:
        device, _ = await runtime.ingress.devices.by_token(runtime.store, token)
        if device is not None:
            return device
    await refuse(runtime, source, "unauthenticated" if token is None else "bad_credentials", transport)
    raise AssertionError("unreachable")  # refuse always raises


async def refuse_credential(request: Request, reason: str, transport: str = "http", what: str = "device") -> None:
    """Refuse a credential: 401, or 429 once the source is past the failed-credential limit (shared by
    every kind of credential, so guessing one kind cannot hide behind another), counted and audited."""
    await refuse(request.app.state.runtime, client_source(request), reason, transport, what)


async def refuse(runtime: Any, source: str, reason: str, transport: str = "http", what: str = "device") -> None:
    """`refuse_credential` without a Request."""
    now = time.monotonic()
    # The limiter first: a source past its limit costs a counter, never a store write. The audit gets
    # one row per source per interval (bridge.security.RefusalAudit), however fast the refusals come.
    allowed = runtime.auth_failures.allow(source, now)
    label = reason if what == "device" else f"{what}_{reason}"
    await audit_refusal(runtime, source, label if allowed else "rate_limited", now)
    # One reason per refusal: the answer the source got (401 for the credential, 429 for the limit).
    runtime.metrics.rejected(transport, label if allowed else "auth_rate_limited")
    if not allowed:
        wait = max(1, int(runtime.auth_failures.retry_after(source)) + 1)
        raise HTTPException(
            status_code=429,
            detail={"error": "rate_limited", "reason": "too many failed credentials from this source"},
            headers={"Retry-After": str(wait)},
        )
    if reason == "unauthenticated":
        raise unauthorised(f"a {what} bearer token is required")
    raise unauthorised(f"the {what} token is not valid")


def matches(token: str | None, expected: str | None) -> bool:
    return token is not None and expected is not None and hmac.compare_digest(token.encode(), expected.encode())


async def require_secret(request: Request, expected: str | None, what: str) -> None:
    """The admin or ops credential: 403 when none is configured, else 401/429 as `refuse_credential`."""
    if not expected:
        raise HTTPException(status_code=403, detail={"error": "disabled", "reason": f"no {what} credential is set"})
    token = bearer_token(request)
    if not matches(token, expected):
        await refuse_credential(request, "unauthenticated" if token is None else "bad_credentials", what=what)


async def require_platform(request: Request, alert_id: str | None = None) -> None:
    """The platform's credential for one alert: its tenant's own token when that tenant has one
    (`SOSBRIDGE_PLATFORM_TENANT_TOKENS`), else `SOSBRIDGE_PLATFORM_TOKEN`. A valid token for another
    tenant's alert is answered 404, as if the alert did not exist."""
    settings = request.app.state.runtime.settings
    per_tenant = tenant_tokens(settings.platform_tenant_tokens)
    if not settings.platform_token and not per_tenant:
        raise HTTPException(status_code=403, detail={"error": "disabled", "reason": "no platform credential is set"})
    token = bearer_token(request)
    tenant = next((t for t, expected in per_tenant.items() if matches(token, expected)), None)
    if tenant is None and not matches(token, settings.platform_token):
        await refuse_credential(request, "unauthenticated" if token is None else "bad_credentials", what="platform")
    if not per_tenant or alert_id is None:
        return
    alert = await request.app.state.runtime.store.get_alert(alert_id)
    owner = alert.tenant_id if alert is not None else None
    if owner is not None and owner != tenant and (tenant is not None or owner in per_tenant):
        raise AlertNotFound(alert_id)
