"""End-to-end MQTT: a real Mosquitto, the embedded bridge with its MQTT adapter, the reference receiver.

Every device publishes through the simulator's MQTT virtual devices (simulator/devices/mqtt.py), using
the genuine samples of its profile in hardware/profiles/ (whose `source` fields cite
the upstream origin of each frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.alerts.pipeline import DURESS_CANCEL_REASON
from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device, Location
from bridge.devices.profiles import ProfileRegistry
from device_adapters.mqtt import MqttAdapter
from device_adapters.mqtt.url import parse_broker_url
from simulator.devices.mqtt import MqttPublisher, VirtualMqttDevice
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import bridge_settings

PROFILES = ProfileRegistry.load()
Contacts = list[dict[str, Any]]


class Listener:
    """A test-side subscriber collecting (topic, payload) pairs from the broker."""

    def __init__(self, url: str, filters: list[str]) -> None:
        u = parse_broker_url(url)
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"listen-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in filters])
        self.client.on_subscribe = lambda *_: self._loop.call_soon_threadsafe(self._ready.set)
        self.client.on_message = self._on_message
        self.client.connect(u.host, u.port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(ValueError):
            self.messages.append((m.topic, json.loads(m.payload)))
        self._loop.call_soon_threadsafe(self._changed.set)

    async def ready(self) -> None:
        await asyncio.wait_for(self._ready.wait(), 10)

    async def wait_for(self, pred: Callable[[str, dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            while True:
                for topic, body in self.messages:
                    if pred(topic, body):
                        return body
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Env:
    def __init__(self, rx: EmbeddedReceiver, settings: Settings, broker: str) -> None:
        self.rx = rx
        self.settings = settings
        self.broker = broker
        self.bridge: EmbeddedBridge | None = None
        self.z2m_base = "zigbee2mqtt"

    @property
    def store(self) -> Any:
        assert self.bridge is not None
        return self.bridge.runtime.store

    @property
    def adapter(self) -> MqttAdapter:
        assert self.bridge is not None
        return next(a for a in self.bridge.runtime.adapters if isinstance(a, MqttAdapter))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[EmbeddedBridge]:
        async with EmbeddedBridge(self.settings) as eb:
            self.bridge = eb
            self.rx.receiver.bridge_url = eb.url
            await self.adapter.wait_ready()
            yield eb

    async def add(self, device_id: str, profile_id: str, **fields: Any) -> Device:
        if "z2m" in fields.get("identifiers", {}) and not fields.get("gateway_id"):
            fields["gateway_id"] = self.z2m_base  # the simulator publishes under the gateway's base topic
        device = Device(device_id=device_id, tenant_id=fields.pop("tenant_id", "acme"), profile_id=profile_id,
                        status="exercise", **fields)
        await self.store.put_device(device)
        return device

    def sim(self, device: Device) -> VirtualMqttDevice:
        profile = PROFILES.get(device.profile_id)
        assert profile is not None
        return VirtualMqttDevice(self.broker, device, profile)

    async def contacts_for(self, device_id: str, n: int = 1, timeout: float = 10) -> Contacts:
        def mine(cs: Contacts) -> Contacts:
            return [c for c in cs if c["device"]["id"] == device_id]

        await self.rx.wait_for(lambda cs: len(mine(cs)) >= n, timeout)
        return mine(self.rx.contacts)


@contextlib.asynccontextmanager
async def make_env(tmp_path: Path, broker: str, monkeypatch: pytest.MonkeyPatch, **overrides: Any
                   ) -> AsyncIterator[Env]:
    # A private zigbee2mqtt base topic, so this test's gateway events touch nobody else's devices.
    base = f"z2m-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SOSBRIDGE_MQTT_Z2M_BASES", base)
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    async with EmbeddedReceiver(secret=secret, platform_token=token, auto_ack_s=0.05) as rx:
        settings = bridge_settings(
            tmp_path, rx.url, secret, token, mqtt_url=broker,
            mqtt_client_id=f"sosbridge-test-{uuid.uuid4().hex[:8]}", **overrides,
        )
        env = Env(rx, settings, broker)
        env.z2m_base = base
        yield env


def _expected(profile_id: str, sample_name: str) -> dict[str, Any]:
    profile = PROFILES.get(profile_id)
    assert profile is not None
    sample = next(s for s in profile.samples if s.name == sample_name)
    return sample.expect[0].model_dump(exclude_none=True)


# Alert samples, one per ecosystem: (profile, sample, identifiers for the device)
ALERT_SAMPLES = [
    ("sosbridge-mqtt-button", "SOS press with a fix", {}),
    ("zigbee2mqtt-tuya-ts0215a-sos", "press", {"z2m": "0x847127fffe0542eb"}),
    ("zigbee2mqtt-tuya-ts0601-sos", "press with last_seen (ISO-8601 with local offset)", {"z2m": "0xa4c13899607febd1"}),
    ("zigbee2mqtt-aqara-wxkg11lm", "single press", {"z2m": "button"}),
    ("zigbee2mqtt-feibit-seb01zb", "sos bit set", {"z2m": "hall_sos"}),
    ("lorawan-milesight-ws101", "short press (ChirpStack v4 envelope, no codec configured in ChirpStack)",
     {"deveui": "24e124535b123456"}),
    ("lorawan-milesight-ws101", "long press decoded by TTN, with the registry location as the registered address",
     {"deveui": "24e124535b123457"}),
    ("lorawan-dragino-lgt92", "SOS key pressed (synthetic variant, bit 0x40 of byte 8 set)",
     {"deveui": "a840410000000001"}),
    ("owntracks-phone", "manual publish is the SOS trigger", {"owntracks": "jane/nokia"}),
    ("rhasspy-hermes-satellite", "help intent in the Rhasspy 2.4 wire shape", {"hermes_site": "bedroom"}),
]


async def test_each_sample_arrives_as_a_contact(tmp_path: Path, mosquitto_url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        registered = Location(lat=55.95, lon=-3.19, accuracy_m=40, source="registered_address")
        devices = []
        for i, (profile_id, _sample, ids) in enumerate(ALERT_SAMPLES):
            devices.append(await env.add(f"dev-{i}", profile_id, identifiers=ids,
                                         registered_address=registered))
        for device, (_p, sample, _i) in zip(devices, ALERT_SAMPLES, strict=True):
            await env.sim(device).send_sample(sample)
        for device, (profile_id, sample, _i) in zip(devices, ALERT_SAMPLES, strict=True):
            want = _expected(profile_id, sample)
            [contact] = await env.contacts_for(device.device_id)
            assert contact["msg_type"] == "alert"
            assert contact["kind"] == want["kind"], (profile_id, sample)
            loc = contact["location"]
            if "lat" in want:
                assert loc["lat"] == pytest.approx(want["lat"]) and loc["lon"] == pytest.approx(want["lon"])
            else:
                # No fix in the frame: the registered address stands in, flagged as such.
                assert loc["source"] == "registered_address" and loc["lat"] == pytest.approx(55.95)
        # TTN's registry location is a registered address, never a fix.
        ttn_contact = (await env.contacts_for("dev-6"))[0]
        assert ttn_contact["location"]["source"] == "registered_address"
        assert ttn_contact["location"]["lat"] == pytest.approx(37.97155556731436)


async def test_non_events_raise_nothing(tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        z2m = await env.add("z-reset", "zigbee2mqtt-tuya-ts0215a-sos", identifiers={"z2m": "0x847127fffe0542eb"})
        phone = await env.add("p-loc", "owntracks-phone", identifiers={"owntracks": "jane/nokia"})
        await env.sim(z2m).send_sample("the reset that follows a press is not a cancel")
        await env.sim(phone).send_sample("location as seen by mosquitto_sub")
        # A real alert from the same phone afterwards: it must carry no earlier contact, and the
        # earlier location update must have become the device's last known position.
        await env.sim(z2m).send_sample("press")
        [contact] = await env.contacts_for("z-reset")
        assert contact["kind"] == "sos"
        for _ in range(100):
            dev = await env.store.get_device("p-loc")
            if dev.last_location is not None:
                break
            await asyncio.sleep(0.05)
        assert dev.last_location is not None and dev.last_location.lat == pytest.approx(48.856826)
        assert not [c for c in env.rx.contacts if c["device"]["id"] == "p-loc"]


async def test_alerts_published_while_bridge_is_down_are_delivered(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env:
        async with env.running():
            devices = [await env.add(f"offline-{i}", "sosbridge-mqtt-button") for i in range(3)]
        # Bridge stopped; its persistent session on the broker queues these QoS 1 messages.
        for i, device in enumerate(devices):
            await env.sim(device).alert("panic", message_id=f"while-down-{i}")
        assert not env.rx.contacts
        async with env.running():
            for device in devices:
                [contact] = await env.contacts_for(device.device_id)
                assert contact["kind"] == "panic"


async def test_retained_message_on_connect_raises_no_alert(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env:
        topic = "sosbridge/acme/retained-btn/alert"
        await MqttPublisher(mosquitto_url).apublish(topic, json.dumps({"kind": "sos", "message_id": "old"}),
                                                    retain=True)
        try:
            async with env.running():
                await env.add("retained-btn", "sosbridge-mqtt-button")
                # Subscribing again replays the retained message: still no alert.
                env.adapter.conn.subscribe([topic])
                live = await env.add("live-btn", "sosbridge-mqtt-button")
                await env.sim(live).alert("sos")
                await env.contacts_for("live-btn")
                await asyncio.sleep(0.3)
                assert not [c for c in env.rx.contacts if c["device"]["id"] == "retained-btn"]
                assert await env.store.open_alert_for_device("retained-btn") is None
        finally:
            await MqttPublisher(mosquitto_url).apublish(topic, b"", retain=True)  # clear it


async def test_bad_input_is_rejected_with_a_reason(tmp_path: Path, mosquitto_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch, max_body_bytes=512) as env, env.running():
        listener = Listener(mosquitto_url, ["sosbridge/+/+/error", "sosbridge/_unrouted/error"])
        try:
            await listener.ready()
            await env.add("bad-btn", "sosbridge-mqtt-button")
            pub = MqttPublisher(mosquitto_url)
            await pub.apublish("sosbridge/acme/ghost/alert", json.dumps({"kind": "sos"}))
            await pub.apublish("sosbridge/acme/bad-btn/alert", b"{not json")
            await pub.apublish("sosbridge/acme/bad-btn/alert", json.dumps({"kind": 42}))
            # A kind the bridge raises itself, never a device: not declared by the button's profile.
            await pub.apublish("sosbridge/acme/bad-btn/alert", json.dumps({"kind": "check_in_missed"}))
            await pub.apublish("sosbridge/acme/bad-btn/alert", json.dumps({"kind": "sos", "pad": "x" * 600}))
            await pub.apublish("zigbee2mqtt-unknown/0xdeadbeef", b"{}")  # not subscribed: ignored
            await pub.apublish(f"{env.z2m_base}/0xnobody", json.dumps({"action": "emergency"}))

            def code(c: str, device: str) -> Callable[[str, dict[str, Any]], bool]:
                return lambda t, b: b.get("code") == c and t == f"sosbridge/acme/{device}/error"

            ghost = await listener.wait_for(code("unknown_device", "ghost"))
            assert "not registered" in ghost["reason"]
            await listener.wait_for(lambda t, b: "invalid JSON" in b.get("reason", ""))
            await listener.wait_for(
                lambda t, b: b.get("code") == "invalid" and "42 is not an alert kind" in b.get("reason", ""))
            await listener.wait_for(code("undeclared_kind", "bad-btn"))
            await listener.wait_for(code("too_large", "bad-btn"))
            await listener.wait_for(lambda t, b: t == "sosbridge/_unrouted/error" and b["code"] == "unknown_device")
            # The adapter keeps serving after all that.
            await env.sim(await env.store.get_device("bad-btn")).alert("sos")
            [contact] = await env.contacts_for("bad-btn")
            assert contact["kind"] == "sos"
            metrics = env.bridge.runtime.metrics.render().decode()  # type: ignore[union-attr]
            assert 'sosbridge_alerts_rejected_total{reason="too_large",transport="mqtt"} 1.0' in metrics
            assert 'reason="unknown_device",transport="mqtt"' in metrics
        finally:
            listener.close()


async def test_location_flood_is_coalesced_and_never_hides_the_sos(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 location fixes then an SOS (issue: the old flood guard PUBACKed and dropped that SOS)."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        await env.add("flood-btn", "sosbridge-mqtt-button")
        before = env.adapter.handled
        msgs = [("sosbridge/acme/flood-btn/alert", json.dumps({"action": "location", "message_id": f"f{i}",
                 "location": {"lat": 55.0 + i / 1000, "lon": -3.0}}).encode(), False) for i in range(20)]
        msgs.append(("sosbridge/acme/flood-btn/alert", json.dumps({"kind": "sos", "message_id": "s1"}).encode(),
                     False))
        await asyncio.to_thread(MqttPublisher(mosquitto_url).publish_many, msgs)
        contact = (await env.contacts_for("flood-btn"))[0]
        # (a fix that came after the SOS is an update of its alert: a second contact, also correct)
        assert contact["kind"] == "sos" and contact["msg_type"] == "alert"
        for _ in range(200):
            if env.adapter.handled - before == 21:
                break
            await asyncio.sleep(0.05)
        assert env.adapter.handled - before == 21  # every frame acknowledged: stored or deliberately coalesced
        metrics = env.bridge.runtime.metrics  # type: ignore[union-attr]
        assert metrics.alerts_rejected.labels("mqtt", "rate_limited")._value.get() == 0
        device = await env.store.get_device("flood-btn")
        # Latest wins: the newest fix is the device's position, whatever was coalesced on the way.
        assert device is not None and device.last_location is not None
        assert device.last_location.lat == pytest.approx(55.019)


async def test_status_topic_follows_the_alert(tmp_path: Path, mosquitto_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        listener = Listener(mosquitto_url, ["sosbridge/acme/led-btn/status"])
        try:
            await listener.ready()
            device = await env.add("led-btn", "sosbridge-mqtt-button")
            await env.sim(device).alert("sos")
            [contact] = await env.contacts_for("led-btn")
            ack = await listener.wait_for(lambda t, b: b["state"] == "acknowledged")
            assert ack["alert_id"] == contact["alert_id"]
            assert ack["message"] == "Help is on the way."
            states = [b["state"] for _, b in listener.messages]
            assert states.index("received") < states.index("acknowledged")
            # Cancel from the button: the status topic says so.
            await env.sim(device).alert("sos", action="cancel", message_id="c-1")
            await listener.wait_for(lambda t, b: b["state"] == "cancelled")
        finally:
            listener.close()


async def test_duress_then_cancel_from_the_button_is_held(tmp_path: Path, mosquitto_url: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: the status topic shows nothing of a duress alert, then "cancelled" (as a cancel would); the
    platform gets an update and the alert stays open; a later acknowledgement does not reach the topic."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        listener = Listener(mosquitto_url, ["sosbridge/acme/duress-btn/status"])
        try:
            await listener.ready()
            device = await env.add("duress-btn", "sosbridge-mqtt-button")
            await env.sim(device).alert("duress", silent=True)
            [contact] = await env.contacts_for("duress-btn")
            assert contact["kind"] == "duress" and contact["silent"] is True
            # Received, forwarded and (auto-)acknowledged: none of it shows on the button's LED topic.
            alert_id = contact["alert_id"]
            for _ in range(50):
                stored = await env.store.get_alert(alert_id)
                if stored is not None and stored.state.value == "acknowledged":
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            assert listener.messages == []
            await env.sim(device).alert("duress", action="cancel", message_id="c-1")
            await listener.wait_for(lambda t, b: b["state"] == "cancelled")
            contacts = await env.contacts_for("duress-btn", n=2)
            assert [c["msg_type"] for c in contacts] == ["alert", "update"]
            assert DURESS_CANCEL_REASON in contacts[1]["reason"] and "(mqtt)" in contacts[1]["reason"]
            alert = await env.store.get_alert(contact["alert_id"])
            assert alert is not None and alert.is_open
            seen = len(listener.messages)
            await env.rx.receiver.callback(contact["alert_id"], "ack")
            await asyncio.sleep(0.5)
            assert all(b["state"] == "cancelled" for _, b in listener.messages[seen:])
        finally:
            listener.close()


async def test_zigbee_gateway_offline_raises_device_offline(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        base = env.z2m_base
        for name in ("a", "b"):
            await env.add(f"gw-{name}", "zigbee2mqtt-tuya-ts0215a-sos", identifiers={"z2m": f"gw-{name}"},
                          gateway_id=base)
        await env.add("elsewhere", "zigbee2mqtt-tuya-ts0215a-sos", identifiers={"z2m": "elsewhere"},
                      gateway_id="another-gateway")
        # zigbee2mqtt's last will: retained {"state":"offline"} on <base>/bridge/state, QoS 1
        # (Koenkk/zigbee2mqtt test/controller.test.ts).
        gateway = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"z2m-{uuid.uuid4().hex[:6]}")
        gateway.will_set(f"{base}/bridge/state", json.dumps({"state": "offline"}), qos=1, retain=True)
        u = parse_broker_url(mosquitto_url)
        gateway.connect(u.host, u.port, keepalive=5)
        gateway.loop_start()
        await asyncio.sleep(0.2)
        gateway.loop_stop()
        gateway.socket().close()  # an unclean disconnect fires the will
        try:
            for name in ("gw-a", "gw-b"):
                [contact] = await env.contacts_for(name, timeout=15)
                assert contact["kind"] == "device_offline"
            assert not [c for c in env.rx.contacts if c["device"]["id"] == "elsewhere"]
        finally:
            await MqttPublisher(mosquitto_url).apublish(f"{base}/bridge/state", b"", retain=True)


async def test_hermes_intent_is_answered(tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        listener = Listener(mosquitto_url, ["hermes/dialogueManager/endSession"])
        try:
            await listener.ready()
            sat = await env.add("kitchen-sat", "rhasspy-hermes-satellite", identifiers={"hermes_site": "kitchen"})
            await env.sim(sat).send_sample("help intent in the Rhasspy 2.4 wire shape")
            await env.contacts_for("kitchen-sat")
            answer = await listener.wait_for(lambda t, b: b.get("sessionId") == "s-1")
            assert answer["text"] in ("Alert received. Sending it to the police.",
                                      "Your alert has been sent to the police.", "Help is on the way.")
            # An unregistered satellite asking for help is told to call 999.
            await MqttPublisher(mosquitto_url).apublish("hermes/intent/CallForHelp", json.dumps(
                {"sessionId": "s-9", "siteId": "garage", "intent": {"intentName": "CallForHelp",
                                                                     "confidenceScore": 1.0}}))
            refused = await listener.wait_for(lambda t, b: b.get("sessionId") == "s-9")
            assert "999" in refused["text"]
        finally:
            listener.close()


SILENT_SATELLITE = """
version: 1
id: test-hermes-silent-satellite
vendor: Test
model: Hermes satellite with a duress intent
transport: mqtt
decoder: hermes
match: {ecosystem: hermes}
kinds: [sos]
ack: speech
options:
  help_intents: [CallForHelp, KettleOn]
  cancel_intents: [CancelHelp]
  silent_intents: [KettleOn]
  kind: sos
samples:
  - name: the duress intent
    source: "derived from the rhasspy-hermes-satellite samples"
    payload_text: '{"sessionId": "s-1", "siteId": "hall", "intent": {"intentName": "KettleOn", "confidenceScore": 1.0}}'
    expect:
      - {action: alert, kind: sos, silent: true, device_ref: hall, message_id: "hermes:s-1"}
"""


async def test_hermes_duress_intent_is_innocuous_and_a_cancel_is_held(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 on Hermes: a silent (duress) intent is answered innocuously, and a later cancel intent is
    answered as if there were no alert to cancel (nobody heard one raised) while the platform gets an
    update and the alert stays open. Raised aloud and made silent later, the cancel answers "cancelled"
    (docs/voice/duress.md)."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "test-hermes-silent-satellite.yaml").write_text(SILENT_SATELLITE)
    async with make_env(tmp_path, mosquitto_url, monkeypatch, profile_dirs=str(profiles)) as env, env.running():
        listener = Listener(mosquitto_url, ["hermes/dialogueManager/endSession"])
        try:
            await listener.ready()
            await env.add("hall-sat", "test-hermes-silent-satellite", identifiers={"hermes_site": "hall"})
            publish = MqttPublisher(mosquitto_url).apublish
            await publish("hermes/intent/KettleOn", json.dumps(
                {"sessionId": "k-1", "siteId": "hall", "intent": {"intentName": "KettleOn", "confidenceScore": 1.0}}))
            [contact] = await env.contacts_for("hall-sat")
            assert contact["silent"] is True
            answer = await listener.wait_for(lambda t, b: b.get("sessionId") == "k-1")
            assert answer["text"] == "OK, noted."
            await publish("hermes/intent/CancelHelp", json.dumps(
                {"sessionId": "c-1", "siteId": "hall", "intent": {"intentName": "CancelHelp", "confidenceScore": 1.0}}))
            answer = await listener.wait_for(lambda t, b: b.get("sessionId") == "c-1")
            assert answer["text"] == "You have no open alert to cancel."
            contacts = await env.contacts_for("hall-sat", n=2)
            assert [c["msg_type"] for c in contacts] == ["alert", "update"]
            assert DURESS_CANCEL_REASON in contacts[1]["reason"]
            alert = await env.store.get_alert(contact["alert_id"])
            assert alert is not None and alert.is_open

            # Aloud first ("help"), then the duress phrase, then a cancel: "cancelled", and still held.
            await env.add("kitchen-sat", "test-hermes-silent-satellite", identifiers={"hermes_site": "kitchen"})
            for session, intent in (("h-2", "CallForHelp"), ("k-2", "KettleOn"), ("c-2", "CancelHelp")):
                await publish(f"hermes/intent/{intent}", json.dumps(
                    {"sessionId": session, "siteId": "kitchen", "intent": {"intentName": intent,
                                                                            "confidenceScore": 1.0}}))
                said = await listener.wait_for(lambda t, b, s=session: b.get("sessionId") == s)
            assert said["text"] == "Alert cancelled."
            kitchen = await env.store.open_alert_for_device("kitchen-sat")
            assert kitchen is not None and kitchen.silent
        finally:
            listener.close()


async def test_shared_subscription_splits_traffic(tmp_path: Path, mosquitto_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    group = f"g{uuid.uuid4().hex[:6]}"
    async with make_env(tmp_path, mosquitto_url, monkeypatch, mqtt_shared_group=group) as env, env.running():
        # A second adapter instance sharing the same store and pipeline, as a second bridge would.
        second = MqttAdapter()
        ctx = env.bridge.runtime  # type: ignore[union-attr]
        second_settings = ctx.settings.model_copy(update={"mqtt_client_id": env.settings.mqtt_client_id + "-2"})

        class Ctx:
            settings = second_settings
            store, metrics, bus, profiles, sms_gateway = ctx.store, ctx.metrics, ctx.bus, ctx.profiles, ctx.sms_gateway
            ingress = ctx.ingress

        await second.start(Ctx())  # type: ignore[arg-type]
        try:
            await second.wait_ready()
            devices = [await env.add(f"shared-{i}", "sosbridge-mqtt-button") for i in range(10)]
            before = env.adapter.handled
            msgs = [(f"sosbridge/acme/{d.device_id}/alert", json.dumps({"kind": "sos", "message_id": "1"}).encode(),
                     False) for d in devices]
            await asyncio.to_thread(MqttPublisher(mosquitto_url).publish_many, msgs)
            for d in devices:
                assert len(await env.contacts_for(d.device_id)) == 1
            await asyncio.sleep(0.3)
            first_share = env.adapter.handled - before
            assert first_share + second.handled == 10  # each message handled exactly once
            assert first_share > 0 and second.handled > 0
        finally:
            await second.stop()


async def test_embedded_amqtt_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("amqtt")
    from device_adapters.mqtt.embedded_broker import EmbeddedBroker

    async with EmbeddedBroker() as broker:
        assert broker.url.startswith("mqtt://127.0.0.1:")
        async with make_env(tmp_path, broker.url, monkeypatch) as env, env.running():
            device = await env.add("amqtt-btn", "sosbridge-mqtt-button")
            await env.sim(device).alert("fall", location={"lat": 57.48, "lon": -4.22, "accuracy_m": 10})
            [contact] = await env.contacts_for("amqtt-btn")
            assert contact["kind"] == "fall" and contact["location"]["lat"] == pytest.approx(57.48)


async def test_unstored_alert_is_not_acknowledged(tmp_path: Path, mosquitto_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The store goes away: the alert must stay unacknowledged at the broker and come back on restart."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env:
        async with env.running() as eb:
            device = await env.add("outage-btn", "sosbridge-mqtt-button")
            await env.sim(device).alert("sos", message_id="before")
            await env.contacts_for("outage-btn")
            acked = env.adapter.handled
            await eb.runtime.store.close()  # the store is gone: nothing can be stored from here on
            await env.sim(device).alert("medical", message_id="during-outage")
            await asyncio.sleep(0.5)
            assert env.adapter.handled == acked  # received, but not acknowledged
        assert [c["kind"] for c in env.rx.contacts if c["device"]["id"] == "outage-btn"] == ["sos"]
        # Restart on the same database and session: the broker redelivers the unacknowledged message,
        # which is stored now (the open SOS alert is escalated by the "medical" press).
        async with env.running():
            alert = None
            for _ in range(200):
                alert = await env.store.open_alert_for_device("outage-btn")
                if alert is not None and alert.attributes.get("escalation_kinds"):
                    break
                await asyncio.sleep(0.05)
            assert alert is not None and alert.attributes["escalation_kinds"] == {"medical": 1}
            history = [h.event for h in await env.store.history(alert.alert_id)]
            assert history.count("received") == 1  # "before" was acknowledged once and not redelivered
