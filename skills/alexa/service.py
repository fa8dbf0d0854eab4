"""The bridge side of a voice request: who is calling, raise/cancel an alert, wait for the platform.

Async and bound to the bridge's store, pipeline and status bus; shared by the Alexa skill (through a
gateway, because ask-sdk handlers are synchronous), the Lambda relay routes and Home Assistant Assist.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass

from bridge.alerts.pipeline import Rejected, discreet, held_under_duress, silent_from_start
from bridge.alerts.supervision import Submitter
from bridge.core.events import StatusBus
from bridge.core.messages import MESSAGE_DELIVERY, MESSAGE_OUT
from bridge.core.model import Alert, AlertState, Device, HistoryEntry, Observation, utcnow
from bridge.store.base import Store, StoreError

log = logging.getLogger("sosbridge.voice")

# States after which waiting for the platform is pointless.
SETTLED = frozenset({AlertState.acknowledged, AlertState.resolved, AlertState.cancelled})


class VoiceRejected(Exception):
    """The pipeline refused the request; `reason` is safe to say to the caller."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class VoiceUnavailable(Exception):
    """Nothing could be stored: the caller must not be told the alert was sent."""


@dataclass(frozen=True)
class Identity:
    device_id: str
    verified: bool
    via: str  # token | alexa_device | alexa_user | unverified
    language: str | None = None
    has_registered_address: bool = False


@dataclass(frozen=True)
class AlertOutcome:
    alert_id: str | None
    outcome: str
    state: AlertState | None
    silent: bool = False
    # A status answer: the platform's latest text message (docs/platform/messages.md), never for a
    # discreet (silent or duress) alert.
    latest_message: str | None = None


def speaks_innocuously(alert: Alert | None) -> bool:
    """The device's open alert was silent from the start (the duress phrase or code, a silent panic):
    nobody near the person heard it raised, so no voice reply may say otherwise until it is closed. Two
    different answers ("help is on the way", then "you have no open alert to cancel") in front of whoever
    is listening give it away. Pure."""
    return alert is not None and silent_from_start(alert)


def unverified_device_id(external_id: str, prefix: str = "alexa") -> str:
    """Alexa ids are longer than a device id may be; hashing also keeps them out of contacts and logs."""
    return f"{prefix}-{hashlib.sha256(external_id.encode()).hexdigest()[:24]}"


def _identity(device: Device, via: str) -> Identity:
    language = device.person.language if device.person else None
    return Identity(device.device_id, True, via, language, device.registered_address is not None)


class VoiceService:
    def __init__(self, store: Store, pipeline: Submitter, bus: StatusBus) -> None:
        # `pipeline` is the ingress's observation entry in the bridge: voice goes through the same lanes.
        self.store = store
        self.pipeline = pipeline
        self.bus = bus

    async def identify(
        self, *, device: str | None, user: str | None, access_token: str | None, prefix: str = "alexa"
    ) -> Identity:
        """Account linking (a bridge device token), then the Alexa device id, then the Alexa user id."""
        if access_token:
            found = await self.store.device_for_token(access_token)
            if found is not None:
                return _identity(found, "token")
        if device:
            found = await self.store.find_device(f"{prefix}_device", device)
            if found is not None:
                return _identity(found, f"{prefix}_device")
        if user:
            found = await self.store.find_device(f"{prefix}_user", user)
            if found is not None:
                return _identity(found, f"{prefix}_user")
        external = device or user or "anonymous"
        return Identity(unverified_device_id(external, prefix), False, "unverified")

    async def raise_alert(self, obs: Observation, wait_s: float) -> AlertOutcome:
        # Subscribe before submitting so an acknowledgement racing the submit is not missed.
        async with self.bus.subscribe() as events:
            try:
                result = await self.pipeline.submit(obs)
            except Rejected as exc:
                raise VoiceRejected(exc.code, exc.reason) from exc
            except StoreError as exc:
                log.error("voice alert not stored", extra={"device_id": obs.device_id})
                raise VoiceUnavailable(str(exc)) from exc
            state = result.state
            innocent = result.alert_id is not None and speaks_innocuously(await self.store.get_alert(result.alert_id))
            if result.alert_id is not None and wait_s > 0 and state not in SETTLED and not innocent:
                state = await self._wait(events, result.alert_id, state, wait_s)
            # `silent`: the alert this joined was silent from the start: answer with the duress reply.
            return AlertOutcome(result.alert_id, result.outcome, state, silent=innocent)

    async def _wait(
        self, events: asyncio.Queue, alert_id: str, state: AlertState | None, wait_s: float
    ) -> AlertState | None:
        async def until_settled() -> AlertState:
            while True:
                ev = await events.get()
                if ev.alert_id == alert_id and ev.state in SETTLED:
                    return ev.state

        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(until_settled(), wait_s)
        # The bus is lossy by design; the store has the truth.
        alert = await self.store.get_alert(alert_id)
        return alert.state if alert else state

    async def cancel(self, device_id: str, transport: str, message_id: str | None, reason: str) -> AlertOutcome:
        """A cancel while a duress or silent panic alert is open is held by the pipeline (the platform gets
        an update, the alert stays open) and answered as if that silent alert did not exist: "cancelled"
        when it was raised audibly and only made silent later, "nothing to cancel" when it was silent
        from the start (docs/voice/duress.md)."""
        before = await self.store.open_alert_for_device(device_id)
        obs = Observation(
            device_id=device_id, transport=transport, action="cancel", message_id=message_id, reason=reason,
            verified=await self.store.get_device(device_id) is not None,
        )
        try:
            result = await self.pipeline.submit(obs)
        except Rejected as exc:
            raise VoiceRejected(exc.code, exc.reason) from exc
        except StoreError as exc:
            raise VoiceUnavailable(str(exc)) from exc
        if before is not None and held_under_duress(before) and before.alert_id == result.alert_id:
            if silent_from_start(before):
                raise VoiceRejected("nothing_to_cancel", "no open alert to cancel")
            return AlertOutcome(result.alert_id, result.outcome, AlertState.cancelled, silent=True)
        return AlertOutcome(result.alert_id, result.outcome, result.state)

    async def innocuous(self, device_id: str) -> bool:
        """Every voice reply on this device stays the innocuous duress reply for the rest of its open alert,
        whatever is asked ("help me", "is help coming", "false alarm, cancel my alert"): see
        `speaks_innocuously` and docs/voice/duress.md."""
        return speaks_innocuously(await self.store.open_alert_for_device(device_id))

    async def status(self, device_id: str, alert_id: str | None) -> AlertOutcome | None:
        alert = await self.store.open_alert_for_device(device_id)
        if alert is None and alert_id:
            alert = await self.store.get_alert(alert_id)
            if alert is not None and alert.device_id != device_id:
                alert = None
        if alert is None:
            return None
        if alert.attributes.get("cancel_requests_under_duress"):
            # The device side was told the alert is cancelled (or never existed): keep telling it that.
            return None
        latest = None
        if not discreet(alert):
            out = [h for h in await self.store.history(alert.alert_id) if h.event == MESSAGE_OUT]
            if out:
                latest = str(out[-1].detail.get("text") or "") or None
                entry = HistoryEntry(at=utcnow(), event=MESSAGE_DELIVERY, state=alert.state, detail={
                    "message_id": out[-1].detail.get("message_id"), "channel": "voice", "status": "sent"})
                await self.store.append_history(alert.alert_id, [entry])
        return AlertOutcome(alert.alert_id, "status", alert.state, alert.silent, latest)
