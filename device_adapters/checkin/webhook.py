"""A check-in reminder pushed to a webhook: Home Assistant (its `webhook` trigger), or an app's backend.

The channels that cannot speak unprompted (the HTTP app, Home Assistant Assist through
`/v1/voice/checkin`, Alexa) get the reminder here when the administrator gave the device a reminder URL
(`sosbridge devices checkin-reminder-url DEVICE URL`; the device credential `checkin_reminder_url`, never
set by the device itself, so no device can make the bridge call an address of its choosing). The bridge
POSTs, once, 5 minutes before the timer runs out (docs/operations/checkin.md):

    {"event": "checkin_reminder", "timer_id": "…", "due_at": "…", "remaining_s": 300,
     "speech": "Your check-in runs out in 5 minutes. If you are safe, say: stop my check-in.",
     "language": "en-GB", "discreet": false}

A silent timer's reminder carries `discreet: true` and no `speech`: whoever is near must not hear it.
The shipped Home Assistant package skills/assist/homeassistant/packages/sos_bridge_checkin_reminder.yaml
turns it into a notification. A failure is logged by the timer service; the timer runs on regardless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bridge.alerts.checkin import Timer
from bridge.store.base import Store
from device_adapters.checkin.voice import reminder_speech

log = logging.getLogger("sosbridge.checkin.webhook")

SCHEME = "checkin_reminder_url"
TIMEOUT_S = 5.0


def reminder_body(timer: Timer, now: float, language: str | None) -> dict[str, Any]:
    """What the webhook gets. Pure."""
    remaining = max(0.0, timer.due_at - now)
    body: dict[str, Any] = {
        "event": "checkin_reminder",
        "timer_id": timer.timer_id,
        "due_at": datetime.fromtimestamp(timer.due_at, UTC).isoformat(timespec="seconds"),
        "remaining_s": round(remaining),
        "language": language,
        "discreet": timer.silent,
    }
    if not timer.silent:
        body["speech"] = reminder_speech(remaining, language)
    return body


class WebhookReminder:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    async def __call__(self, timer: Timer) -> None:
        url = await self.store.get_credential(timer.device_id, SCHEME)
        if not url:
            return  # no push for this device: the app polls GET /v1/checkin
        device = await self.store.get_device(timer.device_id)
        language = device.person.language if device is not None and device.person else None
        import httpx  # only when a reminder is pushed: a started bridge does not hold it (test_lazy_imports)

        async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as client:
            resp = await client.post(url, json=reminder_body(timer, self.clock(), language))
        resp.raise_for_status()
        log.info("check-in reminder pushed", extra={"device_id": timer.device_id, "timer_id": timer.timer_id,
                                                    "status": resp.status_code})
