"""HTTP wearable adapter: `POST /v1/alerts` and friends, authenticated by a device bearer token.

The 202 answer is sent only after the ingress has stored the alert (decoded by the device's profile,
hardware/profiles/sosbridge-http-wearable.yaml); a store failure answers 503 with Retry-After, so the
wearable keeps the alert and retries.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.types import Receive, Scope, Send

from bridge.alerts.pipeline import AlertNotFound, Rejected, SubmitResult
from bridge.app.api import lean
from bridge.app.api.auth import device_for_token, require_device
from bridge.app.api.errors import Answer
from bridge.core.lifecycle import DEVICE_MESSAGES
from bridge.core.messages import MESSAGE_DELIVERY, MESSAGE_OUT, conversation, delivered_over
from bridge.core.model import (
    Alert,
    AlertKind,
    Device,
    HistoryEntry,
    Location,
    LocationSource,
    Observation,
    Severity,
    utcnow,
)
from bridge.devices.decoding import Frame
from bridge.ingress import Claim, Receipt
from bridge.ingress.transport import AdapterContext, BaseAdapter
from bridge.store.base import StoreError
from device_adapters.http.events import BacklogCache, SlotResponse, StreamSlots, event_stream, record_sent, status_body

if TYPE_CHECKING:
    from bridge.app.config import Settings

TRANSPORT = "http"


class LocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(default=None, ge=0, le=1_000_000)
    altitude_m: float | None = Field(default=None, ge=-1000, le=20000)
    source: LocationSource = "gnss"
    fix_time: datetime | None = None

    def to_location(self) -> Location:
        return Location(**self.model_dump())


class AlertIn(BaseModel):
    """The wearable's alert. Unknown fields are refused so a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    kind: AlertKind
    silent: bool = False
    severity: Severity | None = None
    location: LocationIn | None = None
    occurred_at: datetime | None = None
    message_id: str | None = Field(default=None, min_length=1, max_length=128)
    language: str | None = Field(default=None, max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
    attributes: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=32)

    @field_validator("attributes")
    @classmethod
    def _small_values(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if len(key) > 64 or (isinstance(value, str) and len(value) > 256):
                raise ValueError("attribute keys are at most 64 and values at most 256 characters")
        return v


class LocationUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    location: LocationIn
    message_id: str | None = Field(default=None, min_length=1, max_length=128)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal["im_ok", "false_alarm", "other"] = "im_ok"
    message_id: str | None = Field(default=None, min_length=1, max_length=128)


class MessageIn(BaseModel):
    """The person's text for the platform (checked by the bridge: empty, over 1,000 characters)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    message_id: str | None = Field(default=None, min_length=1, max_length=128)


def accepted(result: SubmitResult) -> dict[str, Any]:
    return {
        "alert_id": result.alert_id,
        "outcome": result.outcome,
        "state": result.state.value if result.state else None,
        "message": DEVICE_MESSAGES[result.state] if result.state else None,
    }


def receipt_answer(receipt: Receipt) -> Answer:
    """The Receipt as a 202 answer; a refusal is raised, for the app's one error shape (errors.py)."""
    if receipt.status == "not_stored":
        raise StoreError(receipt.reason)
    if receipt.status in ("refused", "unmatched"):
        raise Rejected(receipt.reason, receipt.code)
    last = receipt.last
    if last is None:
        return Answer(202, {"alert_id": None, "outcome": receipt.status, "state": None, "message": None})
    return Answer(202, accepted(last))


def answer(receipt: Receipt) -> JSONResponse:
    """The Receipt as an HTTP answer (refusals go through the app's error handlers: one error shape)."""
    result = receipt_answer(receipt)
    return JSONResponse(status_code=result.status, content=result.body)


async def accept_alert(ctx: AdapterContext, device: Device, body: AlertIn) -> Answer:
    """`POST /v1/alerts` once the device is known and the body valid: the schema above answered 422 for a
    malformed body; the device's profile decodes the rest, so the profile's samples test the path
    production takes. Answered after the ingress has committed the alert."""
    payload = body.model_dump_json(exclude_none=True, exclude={"attributes"}).encode()
    overrides = {"attributes": dict(body.attributes)} if body.attributes else None
    receipt = await ctx.ingress.receive(
        Frame(payload=payload, meta={"path": "/v1/alerts"}),
        Claim(TRANSPORT, device_id=device.device_id, auth="token"),
        raw=payload.decode(),
        overrides=overrides,
    )
    # A retry (the device missed the first answer) still needs the alert's state.
    return receipt_answer(await ctx.ingress.with_state(receipt))


def lean_create_alert(ctx: AdapterContext) -> lean.Handler:
    """`POST /v1/alerts` without the framework (bridge/app/api/lean.py), answering as its declaration
    below would: a body that is not JSON is refused before the token is looked at, a bad token before the
    fields are checked."""

    def too_large() -> None:
        ctx.metrics.rejected(TRANSPORT, "too_large")

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        req = await lean.read_request(scope, receive, send, ctx.settings.max_body_bytes, too_large)
        if req is None:
            return

        async def work() -> Answer:
            doc = lean.json_body(req)
            device = await device_for_token(ctx, req.bearer, req.source, TRANSPORT)
            if doc is lean.MISSING:
                raise lean.missing_body()
            try:
                body = AlertIn.model_validate(doc, from_attributes=True)
            except ValidationError as exc:
                raise lean.InvalidBody(exc.errors()) from None
            return await accept_alert(ctx, device, body)

        await lean.answer(send, ctx, work)

    return serve


def build_router(ctx: AdapterContext) -> APIRouter:
    slots = StreamSlots(ctx.settings.sse_per_alert, ctx.settings.sse_max_streams)
    backlogs = BacklogCache()
    router = APIRouter(prefix="/v1/alerts", tags=["wearables"])

    @router.post("", status_code=202)
    @lean.served_by(lean_create_alert(ctx))
    async def create_alert(body: AlertIn, device: Device = Depends(require_device)) -> JSONResponse:
        """Raise an alert: answered 202 once it is stored. A retry with the same `message_id` answers
        `"outcome": "duplicate"` with the alert's current state."""
        # The OpenAPI declaration: the bridge serves this route through `lean_create_alert` (same work).
        result = await accept_alert(ctx, device, body)
        return JSONResponse(status_code=result.status, content=result.body)

    @router.post("/{alert_id}/location", status_code=202)
    async def add_location(
        alert_id: str, body: LocationUpdateIn, device: Device = Depends(require_device)
    ) -> JSONResponse:
        obs = Observation(
            device_id=device.device_id,
            transport=TRANSPORT,
            auth="token",
            action="location",
            alert_id=alert_id,
            location=body.location.to_location(),
            message_id=body.message_id,
        )
        return answer(await ctx.ingress.submit(obs, device))

    @router.post("/{alert_id}/cancel", status_code=202)
    async def cancel_alert(
        alert_id: str, body: CancelIn | None = None, device: Device = Depends(require_device)
    ) -> JSONResponse:
        body = body or CancelIn()
        obs = Observation(
            device_id=device.device_id,
            transport=TRANSPORT,
            auth="token",
            action="cancel",
            alert_id=alert_id,
            message_id=body.message_id,
            reason=f"stand-down: {body.reason.replace('_', ' ')} (cancelled at the device)",
        )
        return answer(await ctx.ingress.submit(obs, device))

    @router.post("/{alert_id}/messages", status_code=202)
    async def send_message(alert_id: str, body: MessageIn, device: Device = Depends(require_device)) -> JSONResponse:
        obs = Observation(device_id=device.device_id, transport=TRANSPORT, action="message", alert_id=alert_id,
                          text=body.text, message_id=body.message_id, auth="token")
        return answer(await ctx.ingress.submit(obs, device))

    @router.post("/{alert_id}/messages/{message_id}/read")
    async def message_read(alert_id: str, message_id: str, device: Device = Depends(require_device)) -> dict[str, Any]:
        """The app showed the person a platform message: recorded once as `read` (channel `app`)."""
        alert = await own_alert(alert_id, device)
        history = await ctx.store.history(alert_id)
        if not any(h.event == MESSAGE_OUT and h.detail.get("message_id") == message_id for h in history):
            raise Rejected(f"message {message_id!r} not found", "not_found")
        already = any(h.event == MESSAGE_DELIVERY and h.detail.get("message_id") == message_id
                      and h.detail.get("status") == "read" for h in history)
        if not already:
            await ctx.store.append_history(alert_id, [HistoryEntry(
                at=utcnow(), event=MESSAGE_DELIVERY, state=alert.state,
                detail={"message_id": message_id, "channel": "app", "status": "read"})])
        return {"alert_id": alert_id, "message_id": message_id, "read": True}

    async def own_alert(alert_id: str, device: Device) -> Alert:
        alert = await ctx.store.get_alert(alert_id)
        if alert is None or alert.device_id != device.device_id:
            raise AlertNotFound(alert_id)
        return alert

    @router.get("/{alert_id}")
    async def alert_status(alert_id: str, device: Device = Depends(require_device)) -> dict[str, Any]:
        alert = await own_alert(alert_id, device)
        history = await ctx.store.history(alert_id)
        messages = conversation(history)
        await record_sent(ctx.store, alert, [m["message_id"] for m in messages if m["from"] == "platform"],
                          "http", skip=delivered_over(history, "http"))
        return status_body(alert) | {"messages": messages}

    @router.get("/{alert_id}/events")
    async def alert_events(alert_id: str, device: Device = Depends(require_device)) -> Response:
        """Server-sent events: `status` on every state change, `message` for every platform text (those
        already sent first), so an app needs no polling. Ends after a final state; bounded (events.py)."""
        alert = await own_alert(alert_id, device)
        key = (device.device_id, alert_id)
        if (why := slots.acquire(key)) is not None:
            ctx.metrics.rejected(TRANSPORT, why)
            return JSONResponse({"error": why, "reason": "too many event streams open; poll GET /v1/alerts/{id}"},
                                status_code=429, headers={"Retry-After": "5"})
        return SlotResponse(event_stream(ctx, alert, backlogs, ctx.settings.sse_max_s), lambda: slots.release(key),
                            media_type="text/event-stream",
                            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return router


class HttpAdapter(BaseAdapter):
    name = "http"
    transports = {"http": frozenset({"http_status"})}

    def enabled(self, settings: Settings) -> bool:
        return True

    def routers(self, ctx: AdapterContext) -> list[APIRouter]:
        return [build_router(ctx)]
