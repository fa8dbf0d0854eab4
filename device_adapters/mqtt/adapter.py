"""The MQTT adapter: panic buttons, zigbee2mqtt, LoRaWAN (ChirpStack/TTN), OwnTracks and Hermes intents.

Every message runs the same steps: size limit → route by topic → ignore retained → flood limit →
resolve the device bound to the topic → decode with its profile → `pipeline.submit()` → and only
then PUBACK. A rejection is answered on `sosbridge/<tenant>/<device>/error` and counted; a store
failure is never acknowledged (the submit is retried, and the broker redelivers after a restart).
Alert state changes go back to the device on `sosbridge/<tenant>/<device>/status` (retained).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.adapters import AdapterContext, BaseAdapter
from bridge.decoding import Decoded, DecodeError, Frame, get_decoder, parse_json_object
from bridge.events import StatusEvent
from bridge.lifecycle import DEVICE_MESSAGES
from bridge.model import Device, utcnow
from bridge.pipeline import Rejected
from bridge.profiles import DeviceProfile, ProfileRegistry
from bridge.store.base import StoreError
from bridge.supervision import gateway_state_changed
from device_adapters.decoders import hermes as hermes_decoder
from device_adapters.decoders.zigbee2mqtt import parse_availability
from device_adapters.mqtt import topics
from device_adapters.mqtt.client import Inbound, MqttConnection
from device_adapters.mqtt.limits import FloodGuard
from device_adapters.mqtt.url import parse_broker_url

if TYPE_CHECKING:
    from bridge.config import Settings

log = logging.getLogger("sosbridge.mqtt")

TRANSPORT = "mqtt"
UNROUTED_ERROR_TOPIC = "sosbridge/_unrouted/error"
RAW_LIMIT = 4096


class Refused(Exception):
    """A message the adapter refuses before or around the pipeline; `reason` is safe to publish."""

    def __init__(self, code: str, reason: str, counted: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.counted = counted  # the pipeline already counted it in the metrics


@dataclass
class MqttOptions:
    """Adapter settings beyond bridge/config.py; from SOSBRIDGE_MQTT_* environment variables."""

    z2m_bases: tuple[str, ...] = ("zigbee2mqtt",)
    flood_burst: float = 20.0
    flood_rate_per_s: float = 2.0
    store_retry_max_s: float = 5.0

    @classmethod
    def from_env(cls) -> MqttOptions:
        env = os.environ
        bases = tuple(b.strip().strip("/") for b in env.get("SOSBRIDGE_MQTT_Z2M_BASES", "zigbee2mqtt").split(","))
        return cls(
            z2m_bases=tuple(b for b in bases if b) or ("zigbee2mqtt",),
            flood_burst=float(env.get("SOSBRIDGE_MQTT_FLOOD_BURST", 20)),
            flood_rate_per_s=float(env.get("SOSBRIDGE_MQTT_FLOOD_RATE", 2)),
        )


def status_topic(tenant: str, device: str) -> str:
    return f"sosbridge/{tenant}/{device}/status"


def error_topic(tenant: str, device: str) -> str:
    return f"sosbridge/{tenant}/{device}/error"


class MqttAdapter(BaseAdapter):
    name = "mqtt"

    def __init__(self, options: MqttOptions | None = None) -> None:
        self.options = options or MqttOptions.from_env()
        self.conn: MqttConnection | None = None
        self.ctx: AdapterContext | None = None
        self.profiles: ProfileRegistry | None = None
        self.flood = FloodGuard(self.options.flood_burst, self.options.flood_rate_per_s)
        self.error_flood = FloodGuard(5, 1)
        self.handled = 0  # messages this instance processed (acknowledged), for shared-subscription checks
        self._tasks: set[asyncio.Task[None]] = set()
        self._status_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._mqtt_devices: dict[str, bool] = {}
        self._last_press: dict[tuple[str, str], float] = {}

    # -- Adapter protocol --------------------------------------------------------------------------
    def enabled(self, settings: Settings) -> bool:
        return bool(settings.mqtt_url)

    async def start(self, ctx: AdapterContext) -> None:
        settings = ctx.settings
        assert settings.mqtt_url, "the MQTT adapter needs SOSBRIDGE_MQTT_URL"
        self.ctx = ctx
        self.profiles = getattr(ctx, "profiles", None) or ProfileRegistry.load(
            settings.profile_dirs.split(os.pathsep) if settings.profile_dirs else []
        )
        url = parse_broker_url(settings.mqtt_url)
        if settings.mqtt_shared_group and not url.mqtt5:
            log.warning("shared subscriptions need MQTT v5 on most brokers", extra={"broker": url.redacted()})
        self.conn = MqttConnection(
            url,
            settings.mqtt_client_id,
            topics.subscriptions(self.options.z2m_bases),
            asyncio.get_running_loop(),
            self._on_message,
            shared_group=settings.mqtt_shared_group,
        )
        # Listen for status changes before the first message can create one.
        ready = asyncio.Event()
        self._status_task = asyncio.create_task(self._status_loop(ready), name="mqtt-status")
        await ready.wait()
        self.conn.start()
        log.info("mqtt adapter started", extra={"broker": url.redacted(), "client_id": settings.mqtt_client_id})

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until connected and subscribed (tests and the demo use this; start() never blocks on it)."""
        assert self.conn is not None
        await asyncio.wait_for(self.conn.subscribed.wait(), timeout)

    async def stop(self) -> None:
        self._stopping = True
        if self._tasks:
            # Let in-flight messages finish storing so they can be acknowledged before we go.
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        if self.conn is not None:
            await asyncio.to_thread(self.conn.stop)
        for task in list(self._tasks):
            task.cancel()

    # -- inbound -----------------------------------------------------------------------------------
    def _on_message(self, msg: Inbound) -> None:
        assert self.conn is not None
        if self._stopping:
            self.conn.release_slot()
            return  # not acknowledged: the broker keeps it for the next session
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self.conn is not None:
            self.conn.release_slot()

    async def _handle(self, msg: Inbound) -> None:
        assert self.conn is not None
        delay = 0.1
        while True:
            try:
                await self._process(msg)
                break
            except Exception as exc:
                # Not stored (a store failure, or a bug on the way there): never acknowledge. Retry; if we
                # stop first, the broker redelivers the message to the next session. Losing an alert
                # silently is worse than one message holding an in-flight slot.
                log.error(
                    "mqtt message not stored; not acknowledged",
                    extra={"topic": msg.topic, "error": repr(exc)},
                    exc_info=not isinstance(exc, StoreError),
                )
                if self._stopping:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.store_retry_max_s)
                if self._stopping:
                    return
        self.conn.ack(msg)
        self.handled += 1

    async def _process(self, msg: Inbound) -> None:
        route = topics.route(msg.topic, self.options.z2m_bases)
        if route is None:
            return
        if msg.retain:
            # A retained message is old state replayed by the broker, never a new alert.
            log.debug("retained message ignored", extra={"topic": msg.topic})
            return
        device: Device | None = None
        try:
            max_bytes = self.ctx.settings.max_body_bytes if self.ctx else 16384
            if len(msg.payload) > max_bytes:
                raise Refused("too_large", f"payload of {len(msg.payload)} bytes exceeds {max_bytes}")
            if not self.flood.allow(route.key, time.monotonic()):
                raise Refused("rate_limited", "too many messages; slow down")
            if route.kind == "z2m_bridge":
                await self._gateway_state(route, msg)
                return
            device = await self._resolve(route, msg)
            if device is None:
                return  # not addressed to us (e.g. somebody else's voice intent)
            await self._deliver(route, msg, device)
        except Refused as exc:
            self._refuse(route, device, exc)
        except DecodeError as exc:
            self._refuse(route, device, Refused("invalid", str(exc)))

    def _refuse(self, route: topics.Route, device: Device | None, exc: Refused) -> None:
        assert self.ctx is not None and self.conn is not None
        if not exc.counted:
            self.ctx.metrics.rejected(TRANSPORT, exc.code)
        if route.kind == "own":
            topic = error_topic(route.tenant or "", route.device or "")
        elif device is not None:
            topic = error_topic(device.tenant_id, device.device_id)
        else:
            topic = UNROUTED_ERROR_TOPIC
        log.info(
            "mqtt message rejected",
            extra={"code": exc.code, "device_id": device.device_id if device else None, "route": route.kind},
        )
        if self.error_flood.allow(topic, time.monotonic()):
            body = {"code": exc.code, "reason": exc.reason, "topic": route.meta.get("topic"), "at": _now()}
            self.conn.publish(topic, json.dumps(body), qos=0)

    # -- identity ----------------------------------------------------------------------------------
    async def _resolve(self, route: topics.Route, msg: Inbound) -> Device | None:
        assert self.ctx is not None
        store = self.ctx.store
        if route.kind == "own":
            device = await store.get_device(route.device or "")
            if device is None or device.tenant_id != route.tenant:
                raise Refused("unknown_device", f"device {route.device!r} is not registered in {route.tenant!r}")
            return device
        if route.kind == "hermes":
            doc = _json(msg.payload)
            site = hermes_decoder.site_id(doc)
            name = hermes_decoder.intent_name(doc) if isinstance(doc.get("intent"), dict) else ""
            device = await store.find_device("hermes_site", site)
            if device is None:
                if not self._hermes_intent_configured(name):
                    return None
                self._end_session(doc, "This voice assistant is not registered with the emergency service. "
                                       "Please call 999.")
                raise Refused("unknown_device", f"no device registered for hermes site {site!r}")
            return device
        if route.kind == "ttn":
            doc = _json(msg.payload)
            ids = doc.get("end_device_ids") if isinstance(doc.get("end_device_ids"), dict) else {}
            eui = str(ids.get("dev_eui") or "").lower()
            device = (await store.find_device("deveui", eui) if eui else None) or await store.find_device(
                "ttn", route.value or ""
            )
            if device is None:
                raise Refused("unknown_device", f"no device registered for TTN device {route.value!r}")
            return device
        assert route.scheme is not None and route.value is not None
        device = None
        if route.kind == "z2m":
            device = await store.find_device("z2m", f"{route.meta.get('gateway')}/{route.value}")
        device = device or await store.find_device(route.scheme, route.value)
        if device is None:
            raise Refused("unknown_device", f"no device registered for {route.scheme} {route.value!r}")
        return device

    def _hermes_intent_configured(self, name: str) -> bool:
        assert self.profiles is not None
        for profile in self.profiles.by_decoder("hermes"):
            helps, cancels = hermes_decoder.configured_intents(profile)
            if name in helps or name in cancels:
                return True
        return False

    def _profile_for(self, route: topics.Route, device: Device) -> DeviceProfile:
        assert self.profiles is not None
        allowed = topics.ROUTE_DECODERS.get(route.kind, ())
        profile = self.profiles.get(device.profile_id)
        if profile is None and device.profile_id is None:
            profile = self.profiles.get(topics.DEFAULT_PROFILES.get(route.kind))
        if profile is None:
            raise Refused("no_profile", f"device {device.device_id!r} has no usable profile for this topic")
        if profile.decoder not in allowed:
            raise Refused(
                "wrong_topic", f"profile {profile.id!r} ({profile.decoder}) does not speak on this topic"
            )
        return profile

    # -- decode and submit -------------------------------------------------------------------------
    async def _deliver(self, route: topics.Route, msg: Inbound, device: Device) -> None:
        assert self.ctx is not None
        profile = self._profile_for(route, device)
        meta = dict(route.meta)
        try:
            decoded = get_decoder(profile.decoder)(Frame(payload=msg.payload, meta=meta), profile)
        except DecodeError as exc:
            if route.kind == "hermes":
                self._end_session(_json_or_empty(msg.payload), "Sorry, I could not understand that.")
            raise Refused("invalid", str(exc)) from None
        self._mqtt_devices[device.device_id] = True
        self._check_device_ref(route, device, decoded)
        raw = msg.payload[:RAW_LIMIT].decode("utf-8", "replace")
        speech: str | None = None
        for event in decoded:
            if self._debounced(device, profile, event):
                continue
            obs = event.to_observation(device.device_id, TRANSPORT, raw=raw)
            try:
                result = await self.ctx.pipeline.submit(obs)
            except Rejected as exc:
                if route.kind == "hermes":
                    self._end_session(_json_or_empty(msg.payload), f"Sorry: {exc.reason}.")
                raise Refused(exc.code, exc.reason, counted=True) from None
            log.info(
                "mqtt event accepted",
                extra={"device_id": device.device_id, "alert_id": result.alert_id, "outcome": result.outcome},
            )
            if result.state is not None:
                speech = DEVICE_MESSAGES[result.state]
        if route.kind == "hermes" and decoded:
            self._end_session(_json_or_empty(msg.payload), speech or "Done.")

    def _check_device_ref(self, route: topics.Route, device: Device, decoded: list[Decoded]) -> None:
        """The identity inside the frame must agree with the topic's binding (a DevEUI on the wrong topic)."""
        if route.kind not in ("chirpstack", "ttn"):
            return
        bound = device.identifiers.get("deveui", "").lower()
        for event in decoded:
            if event.device_ref and bound and event.device_ref.lower() != bound:
                raise Refused("identity_mismatch", "the DevEUI in the uplink is not the one bound to this device")

    def _debounced(self, device: Device, profile: DeviceProfile, event: Decoded) -> bool:
        """Ghost presses: the same alert kind again within the profile's debounce window is dropped."""
        if profile.debounce_s <= 0 or event.action != "alert" or event.kind is None:
            return False
        key = (device.device_id, event.kind.value)
        now = time.monotonic()
        last = self._last_press.get(key)
        if last is not None and now - last < profile.debounce_s:
            return True
        self._last_press[key] = now
        return False

    # -- zigbee2mqtt gateway going offline (its last will) ------------------------------------------
    async def _gateway_state(self, route: topics.Route, msg: Inbound) -> None:
        """zigbee2mqtt's bridge/state (its last will): the same path supervision takes for a silent gateway."""
        assert self.ctx is not None
        state = parse_availability(msg.payload)
        if state is None:
            raise Refused("invalid", "bridge/state payload must be online or offline")
        gateway = route.meta["gateway"]
        online = state == "online"
        await gateway_state_changed(
            self.ctx.store,
            self.ctx.pipeline,
            gateway,
            online,
            transport=TRANSPORT,
            reason=f"zigbee2mqtt gateway {gateway!r} " + ("is back online" if online else "went offline"),
        )

    # -- outbound: status topic and Hermes answers -------------------------------------------------
    async def _status_loop(self, ready: asyncio.Event) -> None:
        assert self.ctx is not None
        async with self.ctx.bus.subscribe() as queue:
            ready.set()
            while True:
                # Coalesce what queued up: the status topic is retained per device, so only each device's
                # latest state is worth publishing. Under a flood this cuts publishes (and paho's queue of
                # unacknowledged QoS 1 messages) to one per device per batch.
                batch = [await queue.get()]
                while not queue.empty() and len(batch) < 1000:
                    batch.append(queue.get_nowait())
                latest = {(e.tenant_id, e.device_id): e for e in batch}
                for event in latest.values():
                    await self._publish_status(event)

    async def _publish_status(self, event: StatusEvent) -> None:
        try:
            if not await self._is_mqtt_device(event.device_id):
                return
            body = {
                "alert_id": event.alert_id,
                "state": event.state.value,
                "event": event.event,
                "message": event.message,
                "at": _now(),
            }
            assert self.conn is not None
            # Retained, so a button that reconnects still shows the latest state on its LED.
            self.conn.publish(
                status_topic(event.tenant_id, event.device_id), json.dumps(body), qos=1, retain=True
            )
        except Exception:
            log.exception("status publish failed", extra={"alert_id": event.alert_id})

    async def _is_mqtt_device(self, device_id: str) -> bool:
        known = self._mqtt_devices.get(device_id)
        if known is not None:
            return known
        assert self.ctx is not None and self.profiles is not None
        device = await self.ctx.store.get_device(device_id)
        profile = self.profiles.get(device.profile_id) if device else None
        is_mqtt = device is not None and (
            any(s in device.identifiers for s in topics.SCHEMES)
            or (profile is not None and profile.transport == "mqtt")
            or device.gateway_id is not None
        )
        self._mqtt_devices[device_id] = is_mqtt
        return is_mqtt

    def _end_session(self, doc: dict[str, Any], text: str) -> None:
        session = doc.get("sessionId")
        if not session or self.conn is None:
            return
        body = {"sessionId": session, "text": text}
        self.conn.publish("hermes/dialogueManager/endSession", json.dumps(body), qos=1)


def _json(payload: bytes) -> dict[str, Any]:
    try:
        return parse_json_object(payload)
    except DecodeError as exc:
        raise Refused("invalid", str(exc)) from None


def _json_or_empty(payload: bytes) -> dict[str, Any]:
    try:
        return parse_json_object(payload)
    except DecodeError:
        return {}


def _now() -> str:
    return utcnow().isoformat()
