"""Check-in timers over MQTT: a button or app publishes on `sosbridge/<tenant>/<device>/checkin`.

    {"action": "start", "minutes": 30, "note": "…", "silent": false}   (a button may send just {"action": "start"}:
                                                                        DEFAULT_MINUTES)
    {"action": "extend", "minutes": 10}
    {"action": "stop", "code": "…"}

Each answer, and the reminder before a timer runs out, is published (QoS 1, not retained) on
`sosbridge/<tenant>/<device>/status/checkin`: the timer's public view plus `event` (started, extended,
stopped, reminder); a reminder of a silent timer carries `discreet: true`. Refusals go to the device's
`error` topic as `{"code", "reason", "topic", "at"}`. The device is the one the topic names, registered in
that tenant (the broker's ACL lets a device publish only under its own id).

Rhasspy/Hermes satellites: the intents `SosCheckIn` (slot `minutes`), `SosCheckInExtend` (`minutes`),
`SosCheckInStop` (optional slot `code`) and `SosCheckInStatus` on `hermes/intent/<name>` act for the
device registered with that `hermes_site`; the spoken answer goes to `hermes/dialogueManager/endSession`.
Docs: docs/operations/checkin.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from bridge.alerts.checkin import CheckinError, CheckinTimers, Timer
from bridge.core.model import utcnow
from bridge.infra.aio import wait_event
from bridge.ingress.transport import AdapterContext
from device_adapters.checkin.voice import Action, reminder_speech, speak
from device_adapters.mqtt.client import Inbound, MqttConnection
from device_adapters.mqtt.url import parse_broker_url

log = logging.getLogger("sosbridge.checkin.mqtt")

CHANNEL = "mqtt"
FILTER = "sosbridge/+/+/checkin"
HERMES_FILTER = "hermes/intent/#"
DEFAULT_MINUTES = 30.0
HERMES_ACTIONS: dict[str, Action] = {
    "SosCheckIn": "start", "SosCheckInExtend": "extend", "SosCheckInStop": "stop", "SosCheckInStatus": "status",
}


def hermes_slots(doc: dict[str, Any]) -> dict[str, Any]:
    """{slotName: value} of a Hermes intent message (`slots[].value.value`)."""
    out: dict[str, Any] = {}
    for slot in doc.get("slots") or []:
        if isinstance(slot, dict) and isinstance(slot.get("value"), dict):
            out[str(slot.get("slotName"))] = slot["value"].get("value")
    return out


def status_topic(tenant: str, device: str) -> str:
    return f"sosbridge/{tenant}/{device}/status/checkin"


class CheckinMqtt:
    def __init__(self, ctx: AdapterContext, timers: CheckinTimers) -> None:
        self.ctx = ctx
        self.timers = timers
        url = parse_broker_url(ctx.settings.mqtt_url)
        self.conn = MqttConnection(url, f"{ctx.settings.mqtt_client_id}-checkin", [FILTER, HERMES_FILTER],
                                   asyncio.get_running_loop(), self._on_message)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.timers.reminders[CHANNEL] = self._remind
        self.timers.reminders["hermes"] = self._remind_hermes
        self.conn.start()

    async def wait_ready(self, timeout: float = 10.0) -> bool:
        return await wait_event(self.conn.subscribed, timeout)

    async def stop(self) -> None:
        self.timers.reminders.pop(CHANNEL, None)
        self.timers.reminders.pop("hermes", None)
        for task in list(self._tasks):
            task.cancel()
        await self.conn.stop()

    def _on_message(self, msg: Inbound) -> None:
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Inbound) -> None:
        try:
            await self._process(msg)
        except Exception as exc:  # one bad message must not stop the listener
            log.error("check-in message failed", extra={"topic": msg.topic, "error": repr(exc)})
        finally:
            self.conn.ack(msg)
            self.conn.release_slot()

    async def _process(self, msg: Inbound) -> None:
        if msg.topic.startswith("hermes/"):
            await self._hermes(msg)
            return
        parts = msg.topic.split("/")
        if len(parts) != 4:
            return
        tenant, device_id = parts[1], parts[2]
        device = await self.ctx.store.get_device(device_id)
        if device is None or device.tenant_id != tenant:
            self._error(tenant, device_id, msg.topic, "unknown_device", "no such device in this tenant")
            return
        try:
            doc = json.loads(msg.payload or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            action = doc.get("action", "start")
            if action == "start":
                timer = await self.timers.begin(device, float(doc.get("minutes", DEFAULT_MINUTES)),
                                                str(doc.get("note", "")), bool(doc.get("silent", False)), CHANNEL)
                event = "started"
            elif action == "extend":
                timer = await self.timers.extend(device, float(doc.get("minutes", DEFAULT_MINUTES)))
                event = "extended"
            elif action == "stop":
                code = doc.get("code")
                timer = await self.timers.end(device, str(code) if code is not None else None)
                event = "stopped"
            else:
                raise ValueError(f"unknown action {action!r}")
        except CheckinError as exc:
            self._error(tenant, device_id, msg.topic, exc.code, exc.reason)
            return
        except (ValueError, TypeError) as exc:
            self._error(tenant, device_id, msg.topic, "invalid", str(exc)[:200])
            return
        self._publish(timer, event)

    async def _hermes(self, msg: Inbound) -> None:
        try:
            doc = json.loads(msg.payload)
            name = str(doc["intent"]["intentName"]).rpartition(":")[2]
        except (ValueError, KeyError, TypeError):
            return  # not ours to judge: the MQTT adapter reports malformed intents
        action = HERMES_ACTIONS.get(name)
        if action is None:
            return  # help, cancel and everyone else's intents
        device = await self.ctx.store.find_device("hermes_site", str(doc.get("siteId") or "default"))
        if device is None:
            return
        slots = hermes_slots(doc)
        minutes = slots.get("minutes")
        code = slots.get("code")
        speech = await speak(self.timers, device, action,
                             float(minutes) if isinstance(minutes, int | float) else None,
                             str(code) if code is not None else None, doc.get("lang"), "hermes")
        end = {"sessionId": doc.get("sessionId"), "text": speech}
        self.conn.publish("hermes/dialogueManager/endSession", json.dumps(end), qos=1)

    def _publish(self, timer: Timer, event: str, **extra: Any) -> None:
        body = timer.public() | {"event": event, **extra}
        self.conn.publish(status_topic(timer.tenant_id, timer.device_id), json.dumps(body), qos=1)

    async def _remind(self, timer: Timer) -> None:
        self._publish(timer, "reminder", discreet=timer.silent)

    async def _remind_hermes(self, timer: Timer) -> None:
        """Spoken on the satellite, never for a silent timer (whoever is near would hear it)."""
        device = await self.ctx.store.get_device(timer.device_id)
        site = device.identifiers.get("hermes_site") if device is not None else None
        if timer.silent or device is None or not site:
            return
        language = device.person.language if device.person else None
        text = reminder_speech(timer.due_at - self.timers.clock(), language)
        self.conn.publish("hermes/tts/say", json.dumps({"siteId": site, "text": text, "lang": language}), qos=1)

    def _error(self, tenant: str, device: str, topic: str, code: str, reason: str) -> None:
        body = {"code": code, "reason": reason, "topic": topic, "at": utcnow().isoformat()}
        self.conn.publish(f"sosbridge/{tenant}/{device}/error", json.dumps(body), qos=0)
