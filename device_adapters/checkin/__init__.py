"""The check-in timer's entry channels: the app API (HTTP) and an MQTT topic (docs/operations/checkin.md).

The timers themselves (rules, the rows in the shared store, reminders and alerts) are
`bridge.alerts.checkin`; this plug-in starts them with the bridge, contributes `/v1/checkin` and
`/v1/voice/checkin`, pushes reminders to a device's webhook (webhook.py) and listens on
`sosbridge/<tenant>/<device>/checkin` when an MQTT broker is configured. Voice skills (Alexa) find the
running service with `timers(runtime)`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from bridge.alerts.checkin import WEBHOOK, CheckinTimers
from bridge.ingress.transport import AdapterContext, BaseAdapter
from device_adapters.checkin.webhook import WebhookReminder


class CheckinAdapter(BaseAdapter):
    name = "checkin"

    def __init__(self) -> None:
        self.timers: CheckinTimers | None = None
        self._mqtt: Any = None

    def enabled(self, settings: Any) -> bool:
        return True

    def routers(self, ctx: AdapterContext) -> list[APIRouter]:
        from device_adapters.checkin.routes import build_router
        from device_adapters.checkin.voice import build_voice_router

        return [build_router(lambda: self.timers), build_voice_router(lambda: self.timers)]

    async def start(self, ctx: AdapterContext) -> None:
        svc = self.timers = CheckinTimers(ctx.store, ctx.ingress.observations)
        svc.reminders[WEBHOOK] = WebhookReminder(ctx.store, lambda: svc.clock())  # the clock tests move
        await svc.start()
        if ctx.settings.mqtt_url:
            from device_adapters.checkin.mqtt import CheckinMqtt

            self._mqtt = CheckinMqtt(ctx, self.timers)
            await self._mqtt.start()

    async def stop(self) -> None:
        if self._mqtt is not None:
            await self._mqtt.stop()
        if self.timers is not None:
            await self.timers.stop()


def timers(runtime: Any) -> CheckinTimers | None:
    """The running check-in service of this bridge, for the voice skills (None when not started)."""
    for adapter in getattr(runtime, "adapters", []):
        if isinstance(adapter, CheckinAdapter):
            return adapter.timers
    return None
