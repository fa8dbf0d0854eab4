"""OwnTracks in HTTP mode: `POST /v1/owntracks` with the same JSON the app publishes over MQTT.

The app posts to `http[s]://user:password@host/v1/owntracks` (OwnTracks booklet, tech/http.md) with HTTP
Basic authentication; user and device are named by the `X-Limit-U`/`X-Limit-D` headers or the
`?u=user&d=device` query (as the OwnTracks Recorder takes them). The password is the device's bridge
token (`sosbridge devices add ... --identifier owntracks=<user>/<device>` prints it); when the device has an
`owntracks` identifier, the user/device the app names must be that one.

The body is decoded by the device's profile (`owntracks-phone-http`, the same OwnTracks decoder as over
MQTT: a manual publish is the SOS trigger, locations keep the last known position). The answer is
`200 []`, the JSON array the app expects; refusals answer 4xx with `[]` too.

OwnTracks treats *any* HTTP answer, even a 5xx, as delivered (it queues a payload only when the endpoint
is unreachable). So when the store fails, the bridge tries again inside the request (STORE_RETRIES, with
back-off) before answering 503: an SOS is not given up on the first failed write.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bridge.core.model import Device, utcnow
from bridge.devices.decoding import Frame
from bridge.ingress import Claim, Receipt
from bridge.ingress.transport import AdapterContext, BaseAdapter

if TYPE_CHECKING:
    from bridge.app.config import Settings

log = logging.getLogger("sosbridge.owntracks")

TRANSPORT = "http"
ROUTE = "/v1/owntracks"
STORE_RETRIES = (0.2, 0.5, 1.0, 2.0)  # back-off between attempts while the store fails (~3.7 s in all)


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header. Pure."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def status_for(receipt: Receipt) -> int:
    if receipt.status == "not_stored":
        return 503
    if receipt.status == "refused":
        return {"unknown_device": 401, "identity_mismatch": 403, "too_large": 413}.get(receipt.code, 400)
    return 200


def build_router(ctx: AdapterContext) -> APIRouter:
    router = APIRouter(tags=["owntracks"])

    def refuse(request: Request, status: int, code: str, reason: str) -> JSONResponse:
        ctx.metrics.rejected(TRANSPORT, code)
        log.info("owntracks request refused", extra={"reason": code})
        headers = {"WWW-Authenticate": 'Basic realm="sosbridge"'} if status == 401 else None
        limiter = getattr(ctx, "auth_failures", None)
        if status == 401 and limiter is not None:
            source = request.client.host if request.client else "unknown"
            if not limiter.allow(source, time.monotonic()):
                ctx.metrics.rejected(TRANSPORT, "auth_rate_limited")
                return JSONResponse([], status_code=429, headers={"Retry-After": "60"})
        return JSONResponse([], status_code=status, headers=headers)

    @router.post(ROUTE)
    async def owntracks(request: Request) -> JSONResponse:
        credentials = basic_credentials(request.headers.get("authorization", ""))
        device: Device | None = None
        if credentials is not None and credentials[1]:
            device = await ctx.store.device_for_token(credentials[1])
        if device is None:
            return refuse(request, 401, "bad_credentials" if credentials else "unauthenticated",
                          "HTTP Basic authentication with the device's token is required")
        user = request.headers.get("x-limit-u") or request.query_params.get("u") or (credentials or ("", ""))[0]
        name = request.headers.get("x-limit-d") or request.query_params.get("d") or ""
        bound = device.identifiers.get("owntracks")
        if bound and name and bound != f"{user}/{name}":
            return refuse(request, 403, "identity_mismatch", "this token belongs to another OwnTracks user/device")
        body = await request.body()
        if not body.strip():
            return JSONResponse([], status_code=200)  # a friend deleted in the app: ignore (booklet)
        frame = Frame(payload=body, meta={"ecosystem": "owntracks", "path": ROUTE, "subtopic": ""})
        claim = Claim(TRANSPORT, device_id=device.device_id, auth="token", label=f"OwnTracks {user}/{name}")
        receipt = await ctx.ingress.receive(frame, claim, raw=body.decode("utf-8", "replace"))
        for pause in STORE_RETRIES:
            if receipt.status != "not_stored":
                break
            await asyncio.sleep(pause)
            receipt = await ctx.ingress.receive(frame, claim, raw=body.decode("utf-8", "replace"))
        log.info("owntracks post handled", extra={"device_id": device.device_id, "status": receipt.status,
                                                  "code": receipt.code, "at": utcnow().isoformat(),
                                                  "alert_ids": [r.alert_id for r in receipt.results]})
        content: list[Any] = []
        return JSONResponse(content, status_code=status_for(receipt))

    return router


class OwnTracksHttpAdapter(BaseAdapter):
    name = "owntracks_http"
    transports = {"http": frozenset({"http_status"})}

    def enabled(self, settings: Settings) -> bool:
        return True

    def routers(self, ctx: AdapterContext) -> list[APIRouter]:
        return [build_router(ctx)]
