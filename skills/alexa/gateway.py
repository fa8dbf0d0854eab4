"""How the synchronous ask-sdk handlers reach the bridge.

`LocalGateway` runs `VoiceService` coroutines on the bridge's event loop from the handler's worker
thread (the FastAPI route invokes the skill with `asyncio.to_thread`). The Lambda variant uses
`skills.alexa.relay.HttpGateway`, which calls the same service over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from bridge.core.model import Observation
from device_adapters.checkin.voice import Action, words
from skills.alexa.checkin import CheckinVoice
from skills.alexa.service import AlertOutcome, Identity, VoiceService

T = TypeVar("T")


class Gateway(Protocol):
    def identify(self, *, device: str | None, user: str | None, access_token: str | None) -> Identity: ...

    def raise_alert(self, obs: Observation, wait_s: float) -> Future[AlertOutcome]:
        """Starts storing the alert and returns at once, so the skill can speak while it is stored."""
        ...

    def cancel(self, device_id: str, message_id: str | None, reason: str) -> AlertOutcome: ...

    def status(self, device_id: str, alert_id: str | None) -> AlertOutcome | None: ...

    def innocuous(self, device_id: str) -> bool:
        """Every reply on this device must stay innocuous (VoiceService.innocuous)."""
        ...

    def checkin(self, device_id: str, action: Action, minutes: float | None, code: str | None,
                language: str | None) -> str:
        """Start, extend, stop or ask about the device's check-in timer; what to say (skills/alexa/checkin.py)."""
        ...

    def checkin_running(self, device_id: str) -> bool: ...


class LocalGateway:
    def __init__(
        self, service: VoiceService, loop: asyncio.AbstractEventLoop | None = None, timeout_s: float = 20.0,
        checkins: CheckinVoice | None = None,
    ) -> None:
        self.service = service
        self.checkins = checkins
        self.loop = loop
        self.timeout_s = timeout_s

    def _start(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if self.loop is None:
            coro.close()
            raise RuntimeError("LocalGateway used before its event loop was set")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def identify(self, *, device: str | None, user: str | None, access_token: str | None) -> Identity:
        return self._start(
            self.service.identify(device=device, user=user, access_token=access_token)
        ).result(self.timeout_s)

    def raise_alert(self, obs: Observation, wait_s: float) -> Future[AlertOutcome]:
        return self._start(self.service.raise_alert(obs, wait_s))

    def cancel(self, device_id: str, message_id: str | None, reason: str) -> AlertOutcome:
        return self._start(self.service.cancel(device_id, "alexa", message_id, reason)).result(self.timeout_s)

    def status(self, device_id: str, alert_id: str | None) -> AlertOutcome | None:
        return self._start(self.service.status(device_id, alert_id)).result(self.timeout_s)

    def innocuous(self, device_id: str) -> bool:
        return self._start(self.service.innocuous(device_id)).result(self.timeout_s)

    def checkin(self, device_id: str, action: Action, minutes: float | None, code: str | None,
                language: str | None) -> str:
        if self.checkins is None:
            return words("unavailable", language)
        return self._start(self.checkins.say(device_id, action, minutes, code, language)).result(self.timeout_s)

    def checkin_running(self, device_id: str) -> bool:
        return self.checkins is not None and self._start(self.checkins.running(device_id)).result(self.timeout_s)
