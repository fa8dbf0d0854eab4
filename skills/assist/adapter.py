"""Offline voice: Home Assistant Assist (custom sentences + intent_script + rest_command) → the bridge.

POST /v1/voice/assist with the device's bearer token (the same token as POST /v1/alerts) and
{"intent": "HelpIntent" | "NoteIntent" | "CancelAlertIntent" | "StatusIntent", "text": "...",
 "language": "en-GB", "confirmed": false, "location": {...}}. The reply carries `speech` for Assist to
say, with the same honesty rules as the Alexa skill (skills/alexa/speech.py). A voice satellite has no
location of its own: the bridge uses the device's registered address unless a fix is posted.

The Home Assistant side ships as files in skills/assist/homeassistant/ (docs/voice/home-assistant.md).
The duress phrase is answered innocuously whatever happens, and a cancel while a silent alert is open
never stands it down (docs/voice/duress.md). Its wire name is the innocuous `NoteIntent` (Home
Assistant's log shows it to whoever runs HA); `DuressIntent` is still accepted from older packages.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.app.api.auth import device_for_credential
from bridge.app.config import Settings
from bridge.core.ids import new_id
from bridge.core.model import AlertKind, AlertState, Location, Observation
from bridge.ingress.transport import AdapterContext, BaseAdapter
from skills.alexa.service import AlertOutcome, VoiceRejected, VoiceService, VoiceUnavailable
from skills.alexa.speech import say, state_speech, status_speech
from skills.assist.config import AssistSettings

log = logging.getLogger("sosbridge.assist")

AssistIntent = Literal["HelpIntent", "NoteIntent", "DuressIntent", "CancelAlertIntent", "StatusIntent"]
DURESS_INTENTS = ("NoteIntent", "DuressIntent")  # NoteIntent: the innocuous name the HA package sends


class AssistFix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(default=None, ge=0)


class AssistRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    intent: AssistIntent = "HelpIntent"
    text: str | None = Field(default=None, max_length=500, description="What was said, if known")
    language: str | None = Field(default=None, max_length=35)
    confirmed: bool = Field(default=False, description="A cancel acts only when confirmed")
    site_id: str | None = Field(default=None, max_length=100, description="Satellite / area id, for the record")
    conversation_id: str | None = Field(default=None, max_length=100, description="Used to dedupe retries")
    location: AssistFix | None = None


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower()).split())


def is_duress(req: AssistRequest, phrase: str) -> bool:
    if req.intent in DURESS_INTENTS:
        return True
    return bool(req.text) and normalise(req.text or "") == normalise(phrase)


def bearer_token(header: str) -> str:
    """`Bearer <token>`, or the bare token: a secrets.yaml entry without the `Bearer ` prefix is an easy
    mistake that would otherwise silence every voice request (issue 17). The token is the secret either way."""
    value = header.strip()
    if value.lower().startswith("bearer "):
        return value[7:].strip()
    return value if value and " " not in value else ""


def _reply(speech: str, outcome: AlertOutcome | None = None, status: int = 200) -> JSONResponse:
    body: dict[str, object] = {"speech": speech}
    if outcome is not None:
        body.update(alert_id=outcome.alert_id, state=outcome.state.value if outcome.state else None)
    return JSONResponse(body, status_code=status)


class AssistAdapter(BaseAdapter):
    name = "assist"
    transports = {"voice": frozenset({"speech"})}

    def __init__(self, config: AssistSettings | None = None) -> None:
        self.config = config or AssistSettings()

    def enabled(self, settings: Settings) -> bool:
        return self.config.enabled

    def routers(self, ctx: AdapterContext) -> list[APIRouter]:
        cfg = self.config
        service = VoiceService(ctx.store, ctx.ingress.observations, ctx.bus)
        router = APIRouter(tags=["voice"])

        @router.post(cfg.path, summary="Home Assistant Assist / intent_script trigger (device bearer token)")
        async def assist(request: Request) -> JSONResponse:
            token = bearer_token(request.headers.get("authorization", ""))
            try:
                # The same device authentication as the wearable API: failed-credential limit and audit.
                device = await device_for_credential(request, token or None, "assist")
            except HTTPException as refused:
                why = refused.detail if isinstance(refused.detail, dict) else {"error": str(refused.detail)}
                return JSONResponse(why, status_code=refused.status_code, headers=refused.headers)
            body = await request.body()
            if len(body) > cfg.max_body_bytes:
                ctx.metrics.rejected("assist", "too_large")
                return JSONResponse({"error": "request too large"}, status_code=413)
            try:
                req = AssistRequest.model_validate_json(body)
            except ValidationError as exc:
                ctx.metrics.rejected("assist", "invalid")
                # Without input/ctx: they echo raw bytes and exception objects that JSON cannot encode.
                detail = exc.errors(include_url=False, include_input=False, include_context=False)[:3]
                return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)
            lang = req.language or (device.person.language if device.person else None) or cfg.default_language
            # Under a silent-from-start alert no reply may say an alert exists, whatever is asked
            # (skills/alexa/service.py speaks_innocuously; docs/voice/duress.md).
            innocent = await service.innocuous(device.device_id)
            try:
                if innocent and req.intent == "CancelAlertIntent" and not req.confirmed:
                    # Asking "do you want to cancel your alert?" would say there is one.
                    return _reply(say("nothing_to_cancel", lang))
                if req.intent == "StatusIntent":
                    outcome = await service.status(device.device_id, None)
                    if outcome is None or outcome.state is None:
                        return _reply(say("no_alert", lang))
                    if outcome.silent:
                        # Whoever asks may be the person the silent alert is about.
                        return _reply(cfg.duress_reply or say("duress_reply", lang))
                    return _reply(status_speech(outcome.state, lang, outcome.latest_message), outcome)
                if req.intent == "CancelAlertIntent":
                    if not req.confirmed:
                        # One-shot voice: the confirmation is a second sentence ("yes, cancel my alert").
                        return _reply(say("confirm_cancel_assist", lang))
                    outcome = await service.cancel(
                        device.device_id, "assist", req.conversation_id, "cancelled by voice (Home Assistant)"
                    )
                    return _reply(state_speech(outcome.state or AlertState.cancelled, lang), outcome)
                duress = is_duress(req, cfg.duress_phrase) or innocent
                fix = req.location
                obs = Observation(
                    device_id=device.device_id,
                    transport="assist",
                    auth="token",
                    action="alert",
                    kind=AlertKind.duress if is_duress(req, cfg.duress_phrase) else AlertKind.sos,
                    message_id=req.conversation_id or new_id(),
                    location=Location(lat=fix.lat, lon=fix.lon, accuracy_m=fix.accuracy_m, source="network")
                    if fix
                    else None,
                    silent=duress,
                    language=lang,
                    attributes={
                        "location_source": "assist_fix" if fix else (
                            "registered_address" if device.registered_address else "none"
                        ),
                        "voice_intent": req.intent,
                        "site_id": req.site_id,
                    },
                    reason="silent duress phrase (Home Assistant)" if is_duress(req, cfg.duress_phrase)
                    else "help requested by voice (Home Assistant)",
                )
                outcome = await service.raise_alert(obs, 0.0 if duress else cfg.ack_wait_s)
            except VoiceRejected as exc:
                if exc.code == "nothing_to_cancel":
                    return _reply(say("nothing_to_cancel", lang))
                if req.intent != "CancelAlertIntent" and is_duress(req, cfg.duress_phrase):
                    # Innocuous whatever happens; the status code still tells the automation it failed.
                    return _reply(cfg.duress_reply or say("duress_reply", lang), status=422)
                return _reply(say("rejected", lang, reason=exc.reason), status=422)
            except VoiceUnavailable:
                # Not acknowledged: a non-2xx lets the automation retry, and the speech is honest.
                if req.intent not in ("CancelAlertIntent", "StatusIntent") and is_duress(req, cfg.duress_phrase):
                    return _reply(cfg.duress_reply or say("duress_reply", lang), status=503)
                return _reply(say("store_failed", lang), status=503)
            log.info("assist alert", extra={"alert_id": outcome.alert_id, "device_id": device.device_id})
            if duress:
                return _reply(cfg.duress_reply or say("duress_reply", lang), outcome)
            return _reply(state_speech(outcome.state or AlertState.received, lang), outcome)

        return [router]
