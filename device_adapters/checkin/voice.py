"""Check-in timers by voice: "check on me in 20 minutes", "stop my check-in", "give me 10 more minutes".

`POST /v1/voice/checkin` (device bearer token, the same as `/v1/voice/assist`) with
{"action": "start" | "extend" | "stop" | "status", "minutes": 20, "code": "4711", "language": "en-GB"}
answers {"speech": "..."} for Home Assistant Assist (skills/assist/homeassistant/packages/
sos_bridge_checkin.yaml) or any other voice front end; Hermes satellites use `speak()` through MQTT
(device_adapters/checkin/mqtt.py). A stop with the duress code answers exactly as a stop does.
Docs: docs/operations/checkin.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.alerts.checkin import CheckinError, CheckinTimers
from bridge.app.api.auth import device_for_credential
from bridge.core.model import Device

Action = Literal["start", "extend", "stop", "status"]
DEFAULT_MINUTES = 30.0

SPEECH: dict[str, dict[str, str]] = {
    "en": {
        "started": "OK. I will check on you in {minutes}. When you are safe, say: stop my check-in.",
        "extended": "OK. I will check on you in {remaining}.",
        "stopped": "Your check-in is stopped.",
        "status": "I will check on you in {remaining}.",
        "no_timer": "You have no check-in running.",
        "reminder": "Your check-in runs out in {remaining}. If you are safe, say: stop my check-in.",
        "reminder_app": "Your check-in runs out in {remaining}. If you are safe, stop it now.",
        "invalid_minutes": "Please say a time between 1 minute and 24 hours.",
        "unavailable": "The check-in is not available right now. If you are in danger, call 999.",
        "minute": "1 minute",
        "minutes": "{n} minutes",
        "confirm_start": "Shall I check on you in {minutes}?",
        "confirm_stop": "Do you want to stop your check-in?",
        "start_denied": "OK. I have not started a check-in.",
        "stop_denied": "OK. Your check-in keeps running.",
        "not_registered": "This device is not registered with SOS Bridge, so it cannot run a check-in.",
    },
    "de": {
        "started": "OK. Ich melde mich in {minutes}. Wenn du in Sicherheit bist, sag: Check-in beenden.",
        "extended": "OK. Ich melde mich in {remaining}.",
        "stopped": "Dein Check-in ist beendet.",
        "status": "Ich melde mich in {remaining}.",
        "no_timer": "Du hast keinen laufenden Check-in.",
        "reminder": "Dein Check-in läuft in {remaining} ab. Wenn du in Sicherheit bist, sag: Check-in beenden.",
        "reminder_app": "Dein Check-in läuft in {remaining} ab. Wenn du in Sicherheit bist, beende ihn jetzt.",
        "invalid_minutes": "Bitte nenne eine Zeit zwischen 1 Minute und 24 Stunden.",
        "unavailable": "Der Check-in ist gerade nicht verfügbar. Wenn du in Gefahr bist, ruf die 112 an.",
        "minute": "1 Minute",
        "minutes": "{n} Minuten",
        "confirm_start": "Soll ich mich in {minutes} melden?",
        "confirm_stop": "Möchtest du deinen Check-in beenden?",
        "start_denied": "In Ordnung. Ich habe keinen Check-in gestartet.",
        "stop_denied": "In Ordnung. Dein Check-in läuft weiter.",
        "not_registered": "Dieses Gerät ist nicht bei SOS Bridge registriert und kann keinen Check-in starten.",
    },
}


def words(key: str, language: str | None, **values: str) -> str:
    """One text of the catalogue in the caller's language (English when it has none)."""
    return SPEECH[_lang(language)][key].format(**values)


def duration_words(seconds: float, language: str | None) -> str:
    """"20 minutes" / "20 Minuten", rounded to whole minutes."""
    return _duration(seconds, _lang(language))


def reminder_speech(remaining_s: float, language: str | None) -> str:
    lang = _lang(language)
    return SPEECH[lang]["reminder"].format(remaining=_duration(remaining_s, lang))


def _lang(language: str | None) -> str:
    base = (language or "en").split("-")[0].lower()
    return base if base in SPEECH else "en"


def _duration(seconds: float, lang: str) -> str:
    n = max(1, round(seconds / 60))
    return SPEECH[lang]["minute"] if n == 1 else SPEECH[lang]["minutes"].format(n=n)


async def speak(timers: CheckinTimers, device: Device, action: Action, minutes: float | None, code: str | None,
                language: str | None, channel: str) -> str:
    """Do what was asked and say so. A coerced stop is said exactly like a stop."""
    lang = _lang(language or (device.person.language if device.person else None))
    words = SPEECH[lang]
    try:
        if action == "start":
            timer = await timers.begin(device, minutes or DEFAULT_MINUTES, channel=channel)
            return words["started"].format(minutes=_duration(timer.due_at - timer.started_at, lang))
        if action == "extend":
            timer = await timers.extend(device, minutes or 10)
            return words["extended"].format(remaining=_duration(timer.due_at - timers.clock(), lang))
        if action == "stop":
            await timers.end(device, code)
            return words["stopped"]
        current = await timers.current(device.device_id)
        if current is None:
            return words["no_timer"]
        return words["status"].format(remaining=_duration(current.due_at - timers.clock(), lang))
    except CheckinError as exc:
        return words.get(exc.code, words["unavailable"])


class VoiceCheckin(BaseModel):
    model_config = ConfigDict(extra="ignore")
    action: Action = "status"
    minutes: float | None = Field(default=None, gt=0)
    code: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, max_length=35)


def build_voice_router(get: Callable[[], CheckinTimers | None]) -> APIRouter:
    router = APIRouter(tags=["voice"])

    @router.post("/v1/voice/checkin", summary="Check-in timer by voice (device bearer token)")
    async def voice_checkin(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "").strip()
        token = header[7:].strip() if header.lower().startswith("bearer ") else header
        try:
            device = await device_for_credential(request, token or None, "checkin_voice")
        except HTTPException as refused:
            why = refused.detail if isinstance(refused.detail, dict) else {"error": str(refused.detail)}
            return JSONResponse(why, status_code=refused.status_code, headers=refused.headers)
        try:
            req = VoiceCheckin.model_validate_json(await request.body() or b"{}")
        except ValidationError:
            return JSONResponse({"error": "invalid", "speech": SPEECH["en"]["invalid_minutes"]}, status_code=422)
        timers = get()
        if timers is None:
            return JSONResponse({"speech": SPEECH[_lang(req.language)]["unavailable"]}, status_code=503)
        speech = await speak(timers, device, req.action, req.minutes, req.code, req.language, "voice")
        return JSONResponse({"speech": speech})

    return router
