"""MQTT virtual devices: our own button topic, zigbee2mqtt, ChirpStack, TTN, OwnTracks and Hermes.

Each can publish its profile's samples (hardware/profiles/*.yaml) to a broker URL, re-addressed to
the registered device it plays: the topic is built from the device's identifiers, and the identity
inside the payload (DevEUI, siteId) is rewritten to match, so a sample lands as that device's message.

Scenario actions: `mqtt.sample` {profile, sample, retain?}, `mqtt.alert` {kind, ...} on our own topic,
`mqtt.publish` {topic, payload, retain?}.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bridge.core.model import Device
from bridge.devices.profiles import DeviceProfile, ProfileRegistry, Sample
from device_adapters.mqtt.url import parse_broker_url
from simulator.scenario import RunContext, Step, action


class MqttPublisher:
    """A short-lived paho client that publishes and waits for each PUBACK (blocking; use `apublish`)."""

    def __init__(
        self, url: str, client_id: str | None = None, username: str | None = None, password: str | None = None
    ) -> None:
        self.url = parse_broker_url(url)
        self.client_id = client_id or f"sim-{uuid.uuid4().hex[:10]}"
        self.username = username or self.url.username
        self.password = password or self.url.password

    def publish_many(self, messages: list[tuple[str, bytes, bool]], qos: int = 1) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self.url.mqtt5 else mqtt.MQTTv311,
        )
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.url.tls:
            client.tls_set()
        connack: list[Any] = []
        done = threading.Event()

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            connack.append(reason)
            done.set()

        client.on_connect = on_connect
        client.connect(self.url.host, self.url.port, keepalive=30)
        client.loop_start()
        try:
            if not done.wait(10) or connack[0].is_failure:
                raise ConnectionError(f"broker refused the connection: {connack[0] if connack else 'timeout'}")
            infos = [client.publish(topic, payload, qos=qos, retain=retain) for topic, payload, retain in messages]
            for info in infos:
                info.wait_for_publish(timeout=10)
                if qos > 0 and not info.is_published():
                    raise ConnectionError(f"publish to {self.url.redacted()} was not acknowledged")
        finally:
            client.disconnect()
            client.loop_stop()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 1) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.publish_many([(topic, data, retain)], qos)

    async def apublish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 1) -> None:
        await asyncio.to_thread(self.publish, topic, payload, retain, qos)


# -- re-addressing a profile sample to a registered device ----------------------------------------------
def _own_topic(device: Device) -> str:
    return f"sosbridge/{device.tenant_id}/{device.device_id}/alert"


def sample_message(profile: DeviceProfile, sample: Sample, device: Device) -> tuple[str, bytes]:
    """The topic and payload with which `device` would send `sample`."""
    frame = sample.frame()
    payload = frame.payload
    ids = device.identifiers
    decoder = profile.decoder
    if decoder == "json":
        return _own_topic(device), payload
    if decoder == "zigbee2mqtt":
        name = ids.get("z2m", device.device_id)
        base = device.gateway_id or "zigbee2mqtt"
        if "/" in name:  # bound as "<base>/<friendly name>"
            base, name = name.rsplit("/", 1)
        sub = sample.meta.get("subtopic")
        return f"{base}/{name}" + (f"/{sub}" if sub else ""), payload
    if decoder == "owntracks":
        who = ids.get("owntracks", f"sim/{device.device_id}")
        sub = "/event" if sample.meta.get("topic", "").endswith("/event") else ""
        return f"owntracks/{who}{sub}", payload
    if decoder == "hermes":
        doc = json.loads(payload)
        doc["siteId"] = ids.get("hermes_site", device.device_id)
        name = doc.get("intent", {}).get("intentName", "unknown")
        return f"hermes/intent/{name}", json.dumps(doc).encode()
    if decoder in ("lorawan", "chirpstack", "ttn"):
        doc = json.loads(payload)
        eui = ids.get("deveui", "0000000000000000").lower()
        network = sample.meta.get("network") or ("ttn" if "end_device_ids" in doc else "chirpstack")
        if network == "ttn":
            doc = copy.deepcopy(doc)
            doc["end_device_ids"]["dev_eui"] = eui.upper()
            dev = doc["end_device_ids"].get("device_id", device.device_id)
            app = doc["end_device_ids"].get("application_ids", {}).get("application_id", "app1")
            return f"v3/{app}@sim/devices/{dev}/up", json.dumps(doc).encode()
        doc.setdefault("deviceInfo", {})["devEui"] = eui
        app = doc["deviceInfo"].get("applicationId", "00000000-0000-0000-0000-000000000000")
        event = sample.meta.get("event", "up")
        return f"application/{app}/device/{eui}/event/{event}", json.dumps(doc).encode()
    raise ValueError(f"no MQTT virtual device for decoder {decoder!r}")


def find_sample(profile: DeviceProfile, name: str) -> Sample:
    for sample in profile.samples:
        if sample.name == name:
            return sample
    raise KeyError(f"profile {profile.id!r} has no sample {name!r}")


class VirtualMqttDevice:
    """One registered device publishing its profile's samples (or our own JSON) to a broker."""

    def __init__(
        self, url: str, device: Device, profile: DeviceProfile, username: str | None = None, password: str | None = None
    ) -> None:
        self.device = device
        self.profile = profile
        self.publisher = MqttPublisher(url, client_id=f"sim-{device.device_id}", username=username, password=password)

    def message(self, sample_name: str) -> tuple[str, bytes]:
        return sample_message(self.profile, find_sample(self.profile, sample_name), self.device)

    async def send_sample(self, sample_name: str, retain: bool = False) -> str:
        topic, payload = self.message(sample_name)
        await self.publisher.apublish(topic, payload, retain=retain)
        return topic

    async def send_all_samples(self) -> list[str]:
        msgs = [(*self.message(s.name), False) for s in self.profile.samples if not s.expect_error]
        await asyncio.to_thread(self.publisher.publish_many, msgs)
        return [t for t, _, _ in msgs]

    async def alert(self, kind: str, **fields: Any) -> str:
        """Our own topic: `{"kind": .., "message_id": ..}` plus any fields (location, silent, action)."""
        body = {"kind": kind, "message_id": fields.pop("message_id", None) or uuid.uuid4().hex, **fields}
        await self.publisher.apublish(_own_topic(self.device), json.dumps(body))
        return str(body["message_id"])

    async def reply(self, text: str, **fields: Any) -> str:
        """The person's text for the platform on `sosbridge/<tenant>/<device>/reply` (alert_id optional)."""
        body = {"text": text, "message_id": fields.pop("message_id", None) or uuid.uuid4().hex, **fields}
        topic = f"sosbridge/{self.device.tenant_id}/{self.device.device_id}/reply"
        await self.publisher.apublish(topic, json.dumps(body))
        return str(body["message_id"])


# -- scenario actions ------------------------------------------------------------------------------------
def _device(ctx: RunContext, step: Step) -> Device:
    if not step.device or step.device not in ctx.devices:
        raise KeyError(f"mqtt step needs a registered device, got {step.device!r}")
    return ctx.devices[step.device]


def _url(ctx: RunContext) -> str:
    url = getattr(ctx.settings, "mqtt_url", None)
    if not url:
        raise RuntimeError("this scenario needs MQTT (no broker URL configured)")
    return str(url)


def _profiles(ctx: RunContext) -> ProfileRegistry:
    runtime_profiles = getattr(ctx.runtime, "profiles", None)
    return runtime_profiles if runtime_profiles is not None else ProfileRegistry.load()


@action("mqtt.sample")
async def _sample(ctx: RunContext, step: Step) -> None:
    device = _device(ctx, step)
    profile_id = step.args.get("profile") or device.profile_id
    profile = _profiles(ctx).get(profile_id)
    if profile is None:
        raise KeyError(f"unknown profile {profile_id!r}")
    await VirtualMqttDevice(_url(ctx), device, profile).send_sample(
        step.args["sample"], retain=bool(step.args.get("retain", False))
    )


@action("mqtt.alert")
async def _alert(ctx: RunContext, step: Step) -> None:
    device = _device(ctx, step)
    args = dict(step.args)
    kind = args.pop("kind", "sos")
    profile = _profiles(ctx).get("sosbridge-mqtt-button")
    assert profile is not None
    await VirtualMqttDevice(_url(ctx), device, profile).alert(kind, **args)


@action("mqtt.publish")
async def _publish(ctx: RunContext, step: Step) -> None:
    payload = step.args["payload"]
    data = payload if isinstance(payload, str) else json.dumps(payload)
    await MqttPublisher(_url(ctx)).apublish(step.args["topic"], data, retain=bool(step.args.get("retain")))
