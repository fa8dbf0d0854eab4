"""`/v1/checkin`: the person's app starts, extends and stops a check-in timer (device bearer token).

    POST /v1/checkin          {"minutes": 30, "note": "walking home from the station", "silent": false}  -> 201
    POST /v1/checkin/extend   {"minutes": 10}                                                           -> 200
    POST /v1/checkin/stop     {"code": "…"}  (optional; the duress code stops it and raises silent duress) -> 200
    GET  /v1/checkin          the running timer, else the last one; `reminder` once it went          -> 200
    PUT  /v1/checkin/duress-code {"code": "…"}                                                          -> 204

Every answer is the timer's public view (bridge.alerts.checkin.Timer.public): a coerced stop answers
exactly as a stop. Errors: `{"error", "reason"}`, 404 `no_timer`, 422 `invalid_minutes`/`invalid`.
Docs: docs/operations/checkin.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from bridge.alerts.checkin import DURESS_SCHEME, MAX_NOTE, CheckinError, CheckinTimers, Timer
from bridge.app.api.auth import require_device
from bridge.core.model import Device
from device_adapters.checkin.voice import duration_words, words

CHANNEL = "http"
STATUS = {"no_timer": 404, "invalid_minutes": 422}


class StartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minutes: float = Field(gt=0)
    note: str = Field(default="", max_length=MAX_NOTE)
    silent: bool = False


class ExtendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minutes: float = Field(gt=0)


class StopIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str | None = Field(default=None, max_length=64)


class CodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=4, max_length=64)


def language_of(device: Device) -> str | None:
    return device.person.language if device.person else None


def pending_reminder(timer: Timer, now: float, language: str | None) -> dict[str, Any] | None:
    """The reminder the app shows while the timer runs after it went (None otherwise). Pure."""
    if timer.state != "running" or timer.reminded_at is None:
        return None
    remaining = duration_words(max(0.0, timer.due_at - now), language)
    return {"at": datetime.fromtimestamp(timer.reminded_at, UTC).isoformat(timespec="seconds"),
            "text": words("reminder_app", language, remaining=remaining), "discreet": timer.silent}


def refusal(exc: CheckinError) -> JSONResponse:
    return JSONResponse(status_code=STATUS.get(exc.code, 409), content={"error": exc.code, "reason": exc.reason})


def build_router(service: Callable[[], CheckinTimers | None]) -> APIRouter:
    router = APIRouter(prefix="/v1/checkin", tags=["check-in timer"])

    def timers() -> CheckinTimers:
        found = service()
        if found is None:
            raise CheckinError("unavailable", "the check-in service is not running")
        return found

    @router.post("", status_code=201, summary="Start a check-in timer (replaces a running one)")
    async def start(body: StartIn, device: Device = Depends(require_device)) -> Any:
        try:
            timer = await timers().begin(device, body.minutes, body.note, body.silent, CHANNEL)
        except CheckinError as exc:
            return refusal(exc)
        return timer.public()

    @router.post("/extend", summary="Add minutes to the running timer")
    async def extend(body: ExtendIn, device: Device = Depends(require_device)) -> Any:
        try:
            return (await timers().extend(device, body.minutes)).public()
        except CheckinError as exc:
            return refusal(exc)

    @router.post("/stop", summary="Stop the running timer (the duress code also raises a silent duress alert)")
    async def stop(body: StopIn | None = None, device: Device = Depends(require_device)) -> Any:
        try:
            return (await timers().end(device, (body or StopIn()).code)).public()
        except CheckinError as exc:
            return refusal(exc)

    @router.get("", summary="The running check-in timer, else the last one (with a pending reminder)")
    async def current(device: Device = Depends(require_device)) -> Any:
        svc = timers()
        timer = await svc.last(device.device_id)
        if timer is None:
            return refusal(CheckinError("no_timer", "no check-in timer was started"))
        return timer.public() | {"reminder": pending_reminder(timer, svc.clock(), language_of(device))}

    @router.put("/duress-code", status_code=204, summary="Set the code that stops a timer under duress")
    async def duress_code(body: CodeIn, device: Device = Depends(require_device)) -> Response:
        await timers().store.set_credential(device.device_id, DURESS_SCHEME, body.code, hashed=True)
        return Response(status_code=204)

    return router
