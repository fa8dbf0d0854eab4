"""The check-in timer by Alexa (docs/operations/checkin.md, docs/voice/alexa.md): the bridge side.

"Alexa, ask SOS Bridge to check on me in 30 minutes" (CheckInStartIntent, AMAZON.DURATION), "give me 10
more minutes" (CheckInExtendIntent), "I'm safe" / "check me in" / "cancel my check-in", optionally with
the duress code (CheckInStopIntent, AMAZON.FOUR_DIGIT_NUMBER), "how long is left on my check-in"
(CheckInStatusIntent). Everything goes through `speak()` of the voice route Assist and Hermes use
(device_adapters/checkin/voice.py), so the rules and the words are the same: a stop with the duress code
sounds exactly like a stop and raises a silent duress alert. Only a registered device (account linking,
or an Alexa device or user id bound to one) can run a timer: whoever else asks is told so.

`minutes_from_duration` is pure; `CheckinVoice` runs on the bridge's event loop (the handlers reach it
through the gateway, the Lambda through the relay).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bridge.alerts.checkin import CheckinTimers
from bridge.store.base import Store
from device_adapters.checkin.voice import Action, speak, words

CHANNEL = "alexa"
_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def minutes_from_duration(value: str | None) -> float | None:
    """Minutes of an AMAZON.DURATION value ("PT30M", "PT1H30M", "P1D"); None when absent, unresolved ("?")
    or zero. Pure."""
    found = _ISO_DURATION.match((value or "").strip().upper())
    if found is None:
        return None
    parts = {k: float(v) for k, v in found.groupdict().items() if v}
    minutes = parts.get("d", 0) * 1440 + parts.get("h", 0) * 60 + parts.get("m", 0) + parts.get("s", 0) / 60
    return minutes if minutes > 0 else None


class CheckinVoice:
    def __init__(self, find: Callable[[], CheckinTimers | None], store: Store) -> None:
        self.find = find  # the running check-in service (device_adapters.checkin.timers), None if not started
        self.store = store

    async def running(self, device_id: str) -> bool:
        timers = self.find()
        return timers is not None and await timers.current(device_id) is not None

    async def say(self, device_id: str, action: Action, minutes: float | None, code: str | None,
                  language: str | None) -> str:
        timers = self.find()
        if timers is None:
            return words("unavailable", language)
        device = await self.store.get_device(device_id)
        if device is None:
            return words("not_registered", language)
        return await speak(timers, device, action, minutes, code, language, CHANNEL)
