"""The bridge's HTTP API (FastAPI). Adapters contribute their own routers (wearables, Alexa, Assist)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.alerts.pipeline import AlertNotFound, Rejected
from bridge.app.api.auth import bearer_token, require_platform, require_secret
from bridge.app.api.docs import install_docs
from bridge.app.api.errors import answer_for, error_body, validation_reason
from bridge.app.api.lean import BridgeApp, lean_routes
from bridge.app.api.limits import BodySizeLimit, JsonTextGuard
from bridge.core.contact import contact_json_schema
from bridge.core.lifecycle import DEVICE_MESSAGES, LifecycleEvent
from bridge.core.messages import LANGUAGE_PATTERN, deliveries
from bridge.core.model import CleanModel, Device, registration_warnings, utcnow
from bridge.store.base import StoreError

if TYPE_CHECKING:
    from bridge.app.runtime import BridgeRuntime


class PlatformNote(CleanModel):
    note: str = Field(default="", max_length=500)
    operator: str | None = Field(default=None, max_length=100)


class PlatformMessage(CleanModel):
    """A text for the person. `text` is checked by the bridge (bridge/core/messages.py: empty, over 1,000
    characters), so every refusal has the same shape; its JSON size is bounded by the body limit."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="1 to 1,000 characters; control characters are removed")
    language: str | None = Field(default=None, max_length=35, pattern=LANGUAGE_PATTERN)
    audible: bool = Field(default=False, description="May be spoken or texted (ignored on silent alerts "
                                                     "unless the device record allows it)")
    operator: str | None = Field(default=None, max_length=100)


class DeviceRegistration(Device):
    token: str | None = Field(default=None, min_length=16, max_length=200, description="Device bearer token")


def create_app(runtime: BridgeRuntime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = BridgeApp(title="SOS Bridge", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_docs(app)  # /docs with local Swagger UI assets and the bearer schemes declared
    app.state.runtime = runtime
    settings = runtime.settings

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        runtime.metrics.rejected("http", "invalid_body")
        body = error_body("invalid", validation_reason(list(exc.errors())))
        return JSONResponse(status_code=422, content=body)

    async def _ours(request: Request, exc: Exception) -> JSONResponse:
        answer = answer_for(exc)
        if answer is None:
            raise exc
        return JSONResponse(status_code=answer.status, content=answer.body, headers=answer.headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            return await _ours(request, exc)
        # raised by the framework itself (unparseable body, unknown route, wrong method)
        code = "invalid_body" if exc.status_code == 400 else "error"
        if exc.status_code == 400:
            runtime.metrics.rejected("http", code)
        return JSONResponse(status_code=exc.status_code, content=error_body(code, str(exc.detail)),
                            headers=exc.headers)

    for ours in (Rejected, StoreError):  # AlertNotFound is a Rejected
        app.add_exception_handler(ours, _ours)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Ready, degraded or unavailable, with counts and reason codes only. Details (alert ids in alarm
        details, transport errors) only for the ops credential (SOSBRIDGE_OPS_TOKEN)."""
        detailed = bearer_token(request) is not None
        if detailed:
            await require_secret(request, settings.ops_token, "ops")
        try:
            store_ok = await runtime.store.ping()
        except Exception:
            store_ok = False
        alarms = [
            {"reason": a.reason} | ({"detail": a.detail} if detailed else {})
            for a in runtime.forwarder.alarms.values()
        ]
        transports = [
            {"adapter": p.adapter, "reason": p.reason} | ({"detail": p.detail} if detailed else {})
            for p in runtime.transports.check(runtime.adapters, runtime.started_adapters)
        ]
        status = "unavailable" if not store_ok else "degraded" if alarms or transports else "ready"
        content = {
            "status": status,
            "store": store_ok,
            "alarms": alarms,
            "transports": transports,
            "adapters": runtime.started_adapters,
        }
        return JSONResponse(status_code=200 if status == "ready" else 503, content=content)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/schema/contact")
    async def schema() -> dict[str, Any]:
        return contact_json_schema()

    @app.get("/v1/plugins")
    async def plugins() -> dict[str, Any]:
        return {
            group: [{"name": p.name, "value": p.value, "distribution": p.distribution} for p in loaded]
            for group, loaded in runtime.plugins.items()
        } | {"active_adapters": runtime.started_adapters, "profiles": sorted(runtime.profiles.profiles)}

    async def platform_event(request: Request, alert_id: str, event: LifecycleEvent, body: PlatformNote) -> Any:
        # Only the platform's own credential: never the webhook secret (an HMAC key is not a bearer token).
        await require_platform(request, alert_id)
        alert = await runtime.ledger.lifecycle_event(
            alert_id, event, actor=body.operator or "platform", note=body.note
        )
        await runtime.store.audit(utcnow(), "platform", event.value, alert_id, body.note)
        return {"alert_id": alert.alert_id, "state": alert.state.value, "message": DEVICE_MESSAGES[alert.state]}

    @app.post("/v1/platform/alerts/{alert_id}/ack")
    async def platform_ack(request: Request, alert_id: str, body: PlatformNote | None = None) -> Any:
        return await platform_event(request, alert_id, LifecycleEvent.ack, body or PlatformNote())

    @app.post("/v1/platform/alerts/{alert_id}/resolve")
    async def platform_resolve(request: Request, alert_id: str, body: PlatformNote | None = None) -> Any:
        return await platform_event(request, alert_id, LifecycleEvent.resolve, body or PlatformNote())

    @app.post("/v1/platform/alerts/{alert_id}/messages", status_code=201)
    async def platform_message(request: Request, alert_id: str, body: PlatformMessage) -> Any:
        # Only the platform's own credential: never the webhook secret (an HMAC key is not a bearer token).
        await require_platform(request, alert_id)
        alert, message = await runtime.ledger.platform_message(
            alert_id, body.text, language=body.language, audible=body.audible, actor=body.operator or "platform"
        )
        return {"alert_id": alert.alert_id, "state": alert.state.value, "message_id": message.message_id,
                "text": message.text, "language": message.language, "discreet": message.discreet,
                "audible": message.audible, "at": message.at}

    @app.get("/v1/platform/alerts/{alert_id}")
    async def platform_alert(request: Request, alert_id: str) -> Any:
        # Only the platform's own credential: never the webhook secret (an HMAC key is not a bearer token).
        await require_platform(request, alert_id)
        alert = await runtime.store.get_alert(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        history = await runtime.store.history(alert_id)
        outbox = await runtime.store.outbox_items(alert_id)
        device = await runtime.store.get_device(alert.device_id)
        home = device.registered_address if device is not None else None
        return {
            "alert": alert.model_dump(mode="json", exclude={"raw"}),
            # The registered home address beside whatever fix the alert carries (the console shows both).
            "registered_address": home.model_dump(mode="json", exclude_none=True) if home is not None else None,
            "history": [h.model_dump(mode="json") for h in history],
            "deliveries": [
                {"seq": o.seq, "msg_type": o.msg_type, "state": o.state, "attempts": o.attempts, "route": o.route}
                for o in outbox
            ],
            "message_deliveries": deliveries(history),
        }

    @app.get("/v1/devices")
    async def list_devices(request: Request, tenant: str | None = None) -> list[dict[str, Any]]:
        await require_secret(request, settings.admin_token, "admin")
        return [d.model_dump(mode="json") for d in await runtime.store.list_devices(tenant)]

    @app.post("/v1/devices", status_code=201)
    async def add_device(request: Request, registration: DeviceRegistration) -> dict[str, Any]:
        await require_secret(request, settings.admin_token, "admin")
        token = registration.token or secrets.token_urlsafe(24)
        device = Device.model_validate(registration.model_dump(exclude={"token"}))
        await runtime.store.put_device(device)
        await runtime.store.set_credential(device.device_id, "token", token)
        await runtime.store.audit(utcnow(), "admin", "device_registered", device.device_id)
        runtime.ingress.registry_changed()  # registry changes through the API take effect at once
        if runtime.supervisor is not None:
            runtime.supervisor.rescan()  # a new check-in interval is watched at once, not at the next scan
        warnings = registration_warnings(device)
        return {"device_id": device.device_id, "token": token} | ({"warnings": warnings} if warnings else {})

    @app.delete("/v1/devices/{device_id}")
    async def remove_device(request: Request, device_id: str) -> dict[str, Any]:
        await require_secret(request, settings.admin_token, "admin")
        if not await runtime.store.remove_device(device_id):
            raise HTTPException(404, detail=error_body("not_found", f"device {device_id!r} not found"))
        await runtime.store.audit(utcnow(), "admin", "device_removed", device_id)
        runtime.ingress.registry_changed()
        return {"device_id": device_id, "removed": True}

    for adapter in runtime.adapters:
        for router in adapter.routers(runtime):
            app.include_router(router)
            app.lean.update(lean_routes(router))  # documented by the router, served without the framework

    def count_oversized() -> None:
        runtime.metrics.rejected("http", "too_large")

    app.add_middleware(JsonTextGuard)  # inside the size limit: it reads bodies already limited
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes, on_reject=count_oversized)
    return app
