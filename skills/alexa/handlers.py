"""The skill: ask-sdk-core request handlers in a SkillBuilder.

Intents (skills/alexa/models/*.json): HelpIntent ("I need help"), DuressIntent (the configurable silent
phrase), CancelAlertIntent ("I'm OK", confirmed before it acts), StatusIntent ("is help coming?"), the
check-in timer (CheckInStartIntent, CheckInExtendIntent, CheckInStopIntent, CheckInStatusIntent: start and
stop confirmed before they act; skills/alexa/checkin.py), and the built-ins. AMAZON.CancelIntent/StopIntent
only end the session: a bare "cancel" must never stand down an alert.

Handlers are synchronous (ask-sdk's contract) and reach the bridge through a `Gateway`.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from ask_sdk_core.dispatch_components import AbstractExceptionHandler, AbstractRequestHandler
from ask_sdk_core.handler_input import HandlerInput
from ask_sdk_core.serialize import DefaultSerializer
from ask_sdk_core.skill import CustomSkill
from ask_sdk_core.skill_builder import SkillBuilder
from ask_sdk_core.utils import is_intent_name, is_request_type
from ask_sdk_model import IntentConfirmationStatus, Response
from ask_sdk_model.dialog import ConfirmIntentDirective
from ask_sdk_model.ui import AskForPermissionsConsentCard, SimpleCard

from bridge.core.model import AlertKind, AlertState, Location, Observation
from device_adapters.checkin.voice import DEFAULT_MINUTES, Action, duration_words, words
from skills.alexa.amazon_api import AmazonApi
from skills.alexa.checkin import minutes_from_duration
from skills.alexa.config import AlexaSettings
from skills.alexa.gateway import Gateway
from skills.alexa.location import (
    ADDRESS_PERMISSION,
    GEOLOCATION_PERMISSION,
    location_from_address,
    location_from_geolocation,
)
from skills.alexa.service import Identity, VoiceRejected, VoiceUnavailable
from skills.alexa.speech import say, state_speech, status_speech

log = logging.getLogger("sosbridge.alexa")

HELP_INTENT = "HelpIntent"
DURESS_INTENT = "DuressIntent"
CANCEL_ALERT_INTENT = "CancelAlertIntent"
STATUS_INTENT = "StatusIntent"
ALERT_ID_KEY = "sosbridge_alert_id"
CHECKIN_INTENTS: dict[str, Action] = {
    "CheckInStartIntent": "start", "CheckInExtendIntent": "extend",
    "CheckInStopIntent": "stop", "CheckInStatusIntent": "status",
}

_serializer = DefaultSerializer()


@dataclass
class SkillDeps:
    settings: AlexaSettings
    gateway: Gateway
    amazon: AmazonApi | None


# -- small readers over the request envelope ----------------------------------------------------------
def locale_of(hi: HandlerInput, settings: AlexaSettings) -> str:
    return getattr(hi.request_envelope.request, "locale", None) or settings.default_locale


def _system(hi: HandlerInput) -> Any:
    context = hi.request_envelope.context
    return context.system if context is not None else None


def identify(hi: HandlerInput, deps: SkillDeps) -> Identity:
    system = _system(hi)
    device = system.device.device_id if system is not None and system.device is not None else None
    user = system.user if system is not None else None
    if user is None and hi.request_envelope.session is not None:
        user = hi.request_envelope.session.user
    return deps.gateway.identify(
        device=device,
        user=user.user_id if user is not None else None,
        access_token=user.access_token if user is not None else None,
    )


def consent_token(hi: HandlerInput) -> str | None:
    system = _system(hi)
    for user in (system.user if system is not None else None, getattr(hi.request_envelope.session, "user", None)):
        permissions = getattr(user, "permissions", None)
        if permissions is not None and permissions.consent_token:
            return str(permissions.consent_token)
    return None


@dataclass
class Located:
    location: Location | None
    source: str
    ask_permissions: list[str]


def locate(hi: HandlerInput, deps: SkillDeps, identity: Identity) -> Located:
    """Geolocation from the context, else the Device Address API; the bridge falls back to the registered
    address when neither gives anything."""
    system = _system(hi)
    context = hi.request_envelope.context
    ask: list[str] = []
    geo = _serializer.serialize(context.geolocation) if context is not None and context.geolocation else None
    found = location_from_geolocation(geo if isinstance(geo, dict) else None)
    if found is not None:
        return Located(found, "alexa_geolocation", ask)
    interfaces = system.device.supported_interfaces if system is not None and system.device else None
    if interfaces is not None and getattr(interfaces, "geolocation", None) is not None:
        ask.append(GEOLOCATION_PERMISSION)
    token = consent_token(hi)
    api_token = (system.api_access_token if system is not None else None) or token
    endpoint = system.api_endpoint if system is not None else None
    device_id = system.device.device_id if system is not None and system.device else None
    if token is None or deps.amazon is None or not endpoint or not device_id or not api_token:
        ask.append(ADDRESS_PERMISSION)
    else:
        result = deps.amazon.full_address(endpoint, api_token, device_id)
        if result.status == "ok":
            address = location_from_address(result.address)
            if address is not None:
                return Located(address, "alexa_device_address", ask)
        elif result.status == "forbidden":
            ask.append(ADDRESS_PERMISSION)
    fallback = "registered_address" if identity.has_registered_address else "none"
    return Located(None, fallback, ask)


def _safe_raw(hi: HandlerInput) -> str:
    """Audit copy of the request object only: the context carries access tokens."""
    return json.dumps(_serializer.serialize(hi.request_envelope.request), default=str)[:4000]


# -- handlers ----------------------------------------------------------------------------------------
class _Base(AbstractRequestHandler):
    def __init__(self, deps: SkillDeps) -> None:
        self.deps = deps

    def loc(self, hi: HandlerInput) -> str:
        return locale_of(hi, self.deps.settings)


class LaunchHandler(_Base):
    def can_handle(self, handler_input: HandlerInput) -> bool:
        return is_request_type("LaunchRequest")(handler_input)

    def handle(self, handler_input: HandlerInput) -> Response:
        loc = self.loc(handler_input)
        return (
            handler_input.response_builder.speak(say("launch", loc))
            .ask(say("launch_reprompt", loc))
            .response
        )


class RaiseAlertHandler(_Base):
    """HelpIntent and the silent DuressIntent share one path; only the speech and kind differ."""

    def can_handle(self, handler_input: HandlerInput) -> bool:
        return is_intent_name(HELP_INTENT)(handler_input) or is_intent_name(DURESS_INTENT)(handler_input)

    def handle(self, handler_input: HandlerInput) -> Response:
        deps, loc = self.deps, self.loc(handler_input)
        duress = is_intent_name(DURESS_INTENT)(handler_input)
        request: Any = handler_input.request_envelope.request
        system = _system(handler_input)
        try:
            identity = identify(handler_input, deps)
        except VoiceUnavailable:
            text = say("error", loc) if duress else say("store_failed", loc)
            return handler_input.response_builder.speak(text).set_should_end_session(True).response

        # "Sending your alert now" is spoken while the alert is located and stored; never for duress.
        speaker: threading.Thread | None = None
        if not duress and deps.amazon is not None and system is not None and system.api_access_token:
            amazon, endpoint, token = deps.amazon, system.api_endpoint, system.api_access_token
            speaker = threading.Thread(
                target=amazon.progressive,
                args=(endpoint, token, request.request_id, say("sending", loc)),
                daemon=True,
            )
            speaker.start()

        located = locate(handler_input, deps, identity)
        obs = Observation(
            device_id=identity.device_id,
            transport="alexa",
            auth="token",
            action="alert",
            kind=AlertKind.duress if duress else AlertKind.sos,
            message_id=request.request_id,
            occurred_at=request.timestamp,
            location=located.location,
            silent=duress,
            language=getattr(request, "locale", None) or identity.language or deps.settings.default_locale,
            verified=identity.verified,
            attributes={
                "location_source": located.source,
                "location_permission": "missing" if ADDRESS_PERMISSION in located.ask_permissions else "ok",
                "voice_intent": request.intent.name,
                "identified_by": identity.via,
            },
            raw=_safe_raw(handler_input),
            reason="silent duress phrase (Alexa)" if duress else "help requested by voice (Alexa)",
        )
        future = deps.gateway.raise_alert(obs, 0.0 if duress else deps.settings.ack_wait_s)
        if speaker is not None:
            speaker.join(deps.settings.api_timeout_s + 1)
        rb = handler_input.response_builder
        try:
            outcome = future.result(deps.settings.ack_wait_s + 15)
        except VoiceUnavailable:
            return rb.speak(say("error", loc) if duress else say("store_failed", loc)).set_should_end_session(
                True
            ).response
        except VoiceRejected as exc:
            text = say("error", loc) if duress else say("rejected", loc, reason=exc.reason)
            return rb.speak(text).set_should_end_session(True).response
        log.info(
            "voice alert",
            extra={"alert_id": outcome.alert_id, "device_id": identity.device_id, "outcome": outcome.outcome},
        )
        if outcome.alert_id:
            attrs: Any = handler_input.attributes_manager.session_attributes
            attrs[ALERT_ID_KEY] = outcome.alert_id
        if duress or outcome.silent:
            # The duress phrase, or help asked for while a silent-from-start alert is open: innocuous.
            reply = deps.settings.duress_reply or say("duress_reply", loc)
            return rb.speak(reply).set_should_end_session(True).response
        text = state_speech(outcome.state or AlertState.received, loc)
        if located.ask_permissions:
            text = f"{text} {say('permission_address', loc)}" if ADDRESS_PERMISSION in located.ask_permissions \
                else text
            rb.set_card(AskForPermissionsConsentCard(permissions=list[object](located.ask_permissions)))
        return rb.speak(text).set_should_end_session(True).response


class CancelAlertHandler(_Base):
    def can_handle(self, handler_input: HandlerInput) -> bool:
        return is_intent_name(CANCEL_ALERT_INTENT)(handler_input)

    def handle(self, handler_input: HandlerInput) -> Response:
        loc, rb = self.loc(handler_input), handler_input.response_builder
        request: Any = handler_input.request_envelope.request
        status = request.intent.confirmation_status
        if status == IntentConfirmationStatus.DENIED:
            return rb.speak(say("cancel_denied", loc)).set_should_end_session(True).response
        identity = identify(handler_input, self.deps)
        # Under a silent-from-start alert (the duress phrase, a silent panic) "Do you want to cancel your
        # alert?" would say there is one: the cancel goes ahead at once, is held by the pipeline (the
        # platform hears it was asked for, the alert stays open) and is answered as on Assist, "You have no
        # open alert to cancel." (docs/voice/duress.md).
        if status != IntentConfirmationStatus.CONFIRMED and not self.deps.gateway.innocuous(identity.device_id):
            return (
                rb.speak(say("confirm_cancel", loc))
                .ask(say("confirm_cancel", loc))
                .add_directive(ConfirmIntentDirective(updated_intent=request.intent))
                .set_should_end_session(False)
                .response
            )
        try:
            outcome = self.deps.gateway.cancel(identity.device_id, request.request_id, "cancelled by voice (Alexa)")
        except VoiceRejected as exc:
            key = "nothing_to_cancel" if exc.code == "nothing_to_cancel" else "cancel_failed"
            return rb.speak(say(key, loc)).set_should_end_session(True).response
        except VoiceUnavailable:
            return rb.speak(say("cancel_failed", loc)).set_should_end_session(True).response
        log.info("voice cancel", extra={"alert_id": outcome.alert_id, "device_id": identity.device_id})
        return rb.speak(state_speech(outcome.state or AlertState.cancelled, loc)).set_should_end_session(
            True
        ).response


class StatusHandler(_Base):
    def can_handle(self, handler_input: HandlerInput) -> bool:
        return is_intent_name(STATUS_INTENT)(handler_input)

    def handle(self, handler_input: HandlerInput) -> Response:
        loc, rb = self.loc(handler_input), handler_input.response_builder
        identity = identify(handler_input, self.deps)
        remembered = (handler_input.attributes_manager.session_attributes or {}).get(ALERT_ID_KEY)
        outcome = self.deps.gateway.status(identity.device_id, remembered)
        if outcome is None or outcome.state is None:
            return rb.speak(say("no_alert", loc)).set_should_end_session(True).response
        if outcome.silent:
            # Whoever asks may be the person the silent alert is about: stay innocuous.
            reply = self.deps.settings.duress_reply or say("duress_reply", loc)
            return rb.speak(reply).set_should_end_session(True).response
        speech = status_speech(outcome.state, loc, outcome.latest_message)
        return rb.speak(speech).set_should_end_session(True).response


def slot_value(request: Any, name: str) -> str | None:
    slots = getattr(request.intent, "slots", None) or {}
    slot = slots.get(name)
    value = getattr(slot, "value", None) if slot is not None else None
    return str(value) if value not in (None, "", "?") else None


class CheckinHandler(_Base):
    """The check-in timer, with the rules and words of Assist and Hermes (skills/alexa/checkin.py). Start
    and stop are confirmed first ("Shall I check on you in 30 minutes?", "Do you want to stop your
    check-in?"): a misheard duration or a stray "I'm safe" must not change a timer unasked. The question
    and the answer are the same with or without the duress code."""

    def can_handle(self, handler_input: HandlerInput) -> bool:
        request = handler_input.request_envelope.request
        return is_request_type("IntentRequest")(handler_input) and getattr(
            getattr(request, "intent", None), "name", None) in CHECKIN_INTENTS

    def handle(self, handler_input: HandlerInput) -> Response:
        loc, rb = self.loc(handler_input), handler_input.response_builder
        request: Any = handler_input.request_envelope.request
        action = CHECKIN_INTENTS[request.intent.name]
        minutes = minutes_from_duration(slot_value(request, "duration"))
        code = slot_value(request, "code")
        try:
            identity = identify(handler_input, self.deps)
        except VoiceUnavailable:
            return rb.speak(words("unavailable", loc)).set_should_end_session(True).response
        gateway = self.deps.gateway
        status = request.intent.confirmation_status
        if action in ("start", "stop") and status != IntentConfirmationStatus.CONFIRMED:
            if status == IntentConfirmationStatus.DENIED:
                key = "start_denied" if action == "start" else "stop_denied"
                return rb.speak(words(key, loc)).set_should_end_session(True).response
            if not identity.verified:
                return rb.speak(words("not_registered", loc)).set_should_end_session(True).response
            if action == "stop" and not gateway.checkin_running(identity.device_id):
                return rb.speak(words("no_timer", loc)).set_should_end_session(True).response
            question = words("confirm_stop", loc) if action == "stop" else words(
                "confirm_start", loc, minutes=duration_words((minutes or DEFAULT_MINUTES) * 60, loc))
            return (
                rb.speak(question)
                .ask(question)
                .add_directive(ConfirmIntentDirective(updated_intent=request.intent))
                .set_should_end_session(False)
                .response
            )
        try:
            text = gateway.checkin(identity.device_id, action, minutes, code, loc)
        except (VoiceUnavailable, VoiceRejected):
            text = words("unavailable", loc)
        log.info("voice check-in", extra={"device_id": identity.device_id, "action": action})
        return rb.speak(text).set_should_end_session(True).response


class HelpHandler(_Base):
    def can_handle(self, handler_input: HandlerInput) -> bool:
        return is_intent_name("AMAZON.HelpIntent")(handler_input)

    def handle(self, handler_input: HandlerInput) -> Response:
        loc = self.loc(handler_input)
        return (
            handler_input.response_builder.speak(say("help", loc))
            .ask(say("launch_reprompt", loc))
            .set_card(SimpleCard(say("card_title", loc), say("help", loc)))
            .response
        )


class StopHandler(_Base):
    def can_handle(self, handler_input: HandlerInput) -> bool:
        return is_intent_name("AMAZON.StopIntent")(handler_input) or is_intent_name("AMAZON.CancelIntent")(
            handler_input
        )

    def handle(self, handler_input: HandlerInput) -> Response:
        return handler_input.response_builder.speak(say("goodbye", self.loc(handler_input))).set_should_end_session(
            True
        ).response


class SessionEndedHandler(_Base):
    def can_handle(self, handler_input: HandlerInput) -> bool:
        return is_request_type("SessionEndedRequest")(handler_input)

    def handle(self, handler_input: HandlerInput) -> Response:
        # Never a cancel signal: it also arrives for timeouts and errors (NOTES.md §8).
        request: Any = handler_input.request_envelope.request
        log.info("alexa session ended", extra={"reason": str(getattr(request, "reason", None))})
        return handler_input.response_builder.response


class FallbackHandler(_Base):
    """AMAZON.FallbackIntent and any intent this skill does not define."""

    def can_handle(self, handler_input: HandlerInput) -> bool:
        return is_request_type("IntentRequest")(handler_input)

    def handle(self, handler_input: HandlerInput) -> Response:
        loc = self.loc(handler_input)
        return handler_input.response_builder.speak(say("fallback", loc)).ask(say("launch_reprompt", loc)).response


class UnhandledRequestHandler(_Base):
    """Anything else (events, other request types): an empty, valid response."""

    def can_handle(self, handler_input: HandlerInput) -> bool:
        return True

    def handle(self, handler_input: HandlerInput) -> Response:
        return handler_input.response_builder.response


class ErrorHandler(AbstractExceptionHandler):
    def __init__(self, settings: AlexaSettings) -> None:
        self.settings = settings

    def can_handle(self, handler_input: HandlerInput, exception: Exception) -> bool:
        return True

    def handle(self, handler_input: HandlerInput, exception: Exception) -> Response:
        log.exception("alexa handler failed", exc_info=exception)
        loc = locale_of(handler_input, self.settings)
        return handler_input.response_builder.speak(say("error", loc)).set_should_end_session(True).response


def skill_builder(deps: SkillDeps) -> SkillBuilder:
    sb = SkillBuilder()
    for handler in (
        LaunchHandler(deps),
        RaiseAlertHandler(deps),
        CancelAlertHandler(deps),
        StatusHandler(deps),
        CheckinHandler(deps),
        HelpHandler(deps),
        StopHandler(deps),
        SessionEndedHandler(deps),
        FallbackHandler(deps),
        UnhandledRequestHandler(deps),
    ):
        sb.add_request_handler(handler)
    sb.add_exception_handler(ErrorHandler(deps.settings))
    return sb


def build_skill(deps: SkillDeps) -> CustomSkill:
    return skill_builder(deps).create()
