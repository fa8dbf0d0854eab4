"""The ingress issue's end-to-end cases on a real Mosquitto: nothing an emergency says is dropped,
hidden or delayed by a flood; levels are edges; unmatched frames are visible.

Frames: Hermes `hermes/intent/<name>` payloads (rhasspy-hermes-satellite profile samples, Rhasspy PR #130
shape); zigbee2mqtt IAS zone state `{"sos": true, ...}` (Feibit SEB01ZB exposes, zigbee-herdsman-converters)
and IAS ACE keyfob `{"action": "panic"}` (zigbee2mqtt TS0215A docs).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from simulator.devices.mqtt import MqttPublisher
from tests.device_adapters.test_mqtt_adapter import Listener, make_env


def hermes_intent(name: str, site: str, session: str) -> bytes:
    return json.dumps({
        "input": "what time is it" if name != "CallForHelp" else "help me",
        "intent": {"intentName": name, "confidenceScore": 0.97},
        "siteId": site, "sessionId": session, "slots": [],
    }).encode()


async def _settle(adapter: Any, before: int, n: int) -> None:
    for _ in range(400):
        if adapter.handled - before >= n:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"only {adapter.handled - before} of {n} frames acknowledged")


async def test_kitchen_chatter_never_hides_the_bedroom_help(tmp_path: Path, mosquitto_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """25 ordinary intents from one satellite, then "help" from another: the help arrives (the old
    flood guard shared one bucket for every satellite and PUBACKed the help into nothing)."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        await env.add("kitchen", "rhasspy-hermes-satellite", identifiers={"hermes_site": "kitchen"})
        await env.add("bedroom", "rhasspy-hermes-satellite", identifiers={"hermes_site": "bedroom"})
        before = env.adapter.handled
        msgs = [("hermes/intent/GetTime", hermes_intent("GetTime", "kitchen", f"k{i}"), False) for i in range(25)]
        msgs.append(("hermes/intent/CallForHelp", hermes_intent("CallForHelp", "bedroom", "b1"), False))
        await asyncio.to_thread(MqttPublisher(mosquitto_url).publish_many, msgs)
        [contact] = await env.contacts_for("bedroom")
        assert contact["kind"] == "sos"
        await _settle(env.adapter, before, 26)
        assert not [c for c in env.rx.contacts if c["device"]["id"] == "kitchen"]


async def test_stuck_zone_bit_raises_once_and_its_fall_restores(tmp_path: Path, mosquitto_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        await env.add("hall", "zigbee2mqtt-feibit-seb01zb", identifiers={"z2m": "hall_sos"})
        topic = f"{env.z2m_base}/hall_sos"
        pub = MqttPublisher(mosquitto_url)
        before = env.adapter.handled
        state = {"sos": True, "tamper": False, "battery_low": False, "battery": 90, "linkquality": 120}
        for i in range(10):  # zigbee2mqtt repeats the whole state in every message
            await pub.apublish(topic, json.dumps(state | {"linkquality": 100 + i}))
        await _settle(env.adapter, before, 10)
        [contact] = await env.contacts_for("hall")
        assert contact["kind"] == "sos" and contact["msg_type"] == "alert"
        alert = await env.store.open_alert_for_device("hall")
        assert alert is not None and alert.escalation_count == 0  # a level, not ten presses
        metrics = env.bridge.runtime.metrics  # type: ignore[union-attr]
        assert metrics.frames_held.labels("zigbee2mqtt-feibit-seb01zb")._value.get() >= 9
        await pub.apublish(topic, json.dumps(state | {"sos": False}))  # the falling edge
        contacts = await env.contacts_for("hall", n=2)
        assert contacts[1]["msg_type"] == "update" and "cleared" in (contacts[1]["reason"] or "")
        await asyncio.sleep(0.3)
        assert len([c for c in env.rx.contacts if c["device"]["id"] == "hall"]) == 2


async def test_unmatched_frame_is_counted_published_and_logged(tmp_path: Path, mosquitto_url: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """An Aqara button's profile has no mapping for an IAS ACE "panic": the frame is not dropped silently."""
    caplog.set_level("INFO", logger="sosbridge.ingress")
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        listener = Listener(mosquitto_url, ["sosbridge/+/+/error"])
        try:
            await listener.ready()
            await env.add("aqara-1", "zigbee2mqtt-aqara-wxkg11lm", identifiers={"z2m": "aqara_1"})
            await MqttPublisher(mosquitto_url).apublish(f"{env.z2m_base}/aqara_1", json.dumps({"action": "panic"}))
            body = await listener.wait_for(lambda t, b: t == "sosbridge/acme/aqara-1/error")
            assert body["code"] == "unmatched" and "zigbee2mqtt-aqara-wxkg11lm" in body["reason"]
            metrics = env.bridge.runtime.metrics  # type: ignore[union-attr]
            assert metrics.unmatched_count("zigbee2mqtt-aqara-wxkg11lm") == 1
            line = next(r for r in caplog.records if r.getMessage() == "frame matches no mapping")
            assert line.device_id == "aqara-1" and line.profile == "zigbee2mqtt-aqara-wxkg11lm"  # type: ignore[attr-defined]
        finally:
            listener.close()


async def test_ias_ace_keyfob_panic_raises_an_sos(tmp_path: Path, mosquitto_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The keyfob profiles map zigbee2mqtt's IAS ACE actions (panic, emergency, sos): once silently dropped."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        await env.add("fob", "zigbee2mqtt-tuya-ts0215a-sos", identifiers={"z2m": "fob"})
        await MqttPublisher(mosquitto_url).apublish(f"{env.z2m_base}/fob", json.dumps({"action": "panic"}))
        [contact] = await env.contacts_for("fob")
        assert contact["kind"] == "sos"


async def test_a_flooding_device_folds_and_another_first_alert_goes_through(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Device A presses 300 times with new message ids; B's first SOS comes in behind them. Every press of
    A is counted in one alert, A causes a bounded number of contacts, and B is not refused or lost."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        await env.add("a", "sosbridge-mqtt-button")
        await env.add("b", "sosbridge-mqtt-button")
        before = env.adapter.handled
        msgs = [("sosbridge/acme/a/alert", json.dumps({"kind": "sos", "message_id": f"a{i}"}).encode(), False)
                for i in range(300)]
        msgs.append(("sosbridge/acme/b/alert", json.dumps({"kind": "sos", "message_id": "b1"}).encode(), False))
        await asyncio.to_thread(MqttPublisher(mosquitto_url).publish_many, msgs)
        [b_contact] = await env.contacts_for("b")
        assert b_contact["msg_type"] == "alert"
        await _settle(env.adapter, before, 301)
        alert = await env.store.open_alert_for_device("a")
        assert alert is not None and alert.escalation_count == 299  # every press counted
        history = await env.store.history(alert.alert_id)
        presses = [h.detail["presses"] for h in history if h.event in ("received", "escalated")]
        # Presses waiting together were folded into few commits (one device: one commit at a time).
        assert sum(presses) == 300 and len(presses) < 300
        await asyncio.sleep(0.5)
        a_contacts = [c for c in env.rx.contacts if c["device"]["id"] == "a"]
        # The first contact, at most the burst of updates (5) and the one waiting: never one per press.
        assert 1 <= len(a_contacts) <= 7
        assert all(len(c["references"]) <= 2 for c in a_contacts)
        # A redelivered press (same message id) is a duplicate, even though it was folded.
        await MqttPublisher(mosquitto_url).apublish("sosbridge/acme/a/alert",
                                                    json.dumps({"kind": "sos", "message_id": "a150"}))
        await _settle(env.adapter, before, 302)
        again = await env.store.open_alert_for_device("a")
        assert again is not None and again.escalation_count == 299


async def test_sos_right_after_a_fix_uses_that_fix(tmp_path: Path, mosquitto_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingress reuses registry answers for 2 s; the alert must still use the position stored a moment ago."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        await env.add("walker", "sosbridge-mqtt-button")
        pub = MqttPublisher(mosquitto_url)
        topic = "sosbridge/acme/walker/alert"
        await pub.apublish(topic, json.dumps({"action": "location", "message_id": "l1",
                                              "location": {"lat": 57.1, "lon": -4.2, "accuracy_m": 10}}))
        for _ in range(200):
            device = await env.store.get_device("walker")
            if device is not None and device.last_location is not None:
                break
            await asyncio.sleep(0.02)
        await pub.apublish(topic, json.dumps({"action": "location", "message_id": "l2",
                                              "location": {"lat": 57.2, "lon": -4.3, "accuracy_m": 10}}))
        for _ in range(200):
            device = await env.store.get_device("walker")
            if device is not None and device.last_location is not None and device.last_location.lat == 57.2:
                break
            await asyncio.sleep(0.02)
        await pub.apublish(topic, json.dumps({"kind": "sos", "message_id": "s1"}))  # no fix of its own
        contact = (await env.contacts_for("walker"))[0]
        assert contact["location"]["last_known"] is True
        assert (contact["location"]["lat"], contact["location"]["lon"]) == (57.2, -4.3)


async def test_identical_frames_without_an_id_are_each_handled_once_not_raced(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 byte-identical location frames without a message id arrive together (a tracker stuck resending
    one fix), then B's SOS. Each copy waits once for the copy in flight and is then handled on its own:
    the old loop made every waiter race for the next "original" after each one, about N^2/2 wake-ups
    (4.8 ms a frame at 10,000 frames, measured with bench/hotpath.py), so one device starved the rest."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        await env.add("a", "sosbridge-mqtt-button")
        await env.add("b", "sosbridge-mqtt-button")
        lookups = 0
        real_in_flight = env.adapter.repeats.in_flight

        def counting_in_flight(key: bytes) -> Any:
            nonlocal lookups
            lookups += 1
            return real_in_flight(key)

        monkeypatch.setattr(env.adapter.repeats, "in_flight", counting_in_flight)
        before = env.adapter.handled
        fix = json.dumps({"action": "location", "location": {"lat": 57.4778, "lon": -4.2247, "accuracy_m": 9}})
        msgs = [("sosbridge/acme/a/alert", fix.encode(), False) for _ in range(300)]
        msgs.append(("sosbridge/acme/b/alert", json.dumps({"kind": "sos", "message_id": "b1"}).encode(), False))
        await asyncio.to_thread(MqttPublisher(mosquitto_url).publish_many, msgs)
        [b_contact] = await env.contacts_for("b")
        assert b_contact["msg_type"] == "alert"
        await _settle(env.adapter, before, 301)
        assert lookups <= 301  # at most one look at the frames in flight per frame (old code: ~45,000)


async def test_a_status_event_carrying_its_device_needs_no_store_read(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alert raised over HTTP (a wearable) or by voice: the status publisher decides whether the device
    listens on MQTT from the record the intake handed on, not from a store read per alert (issue 27)."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        button = await env.add("btn", "sosbridge-mqtt-button")
        wearable = await env.add("wear", "sosbridge-http-wearable")
        reads: list[str] = []
        real_get = env.store.get_device

        async def counting_get(device_id: str) -> Any:
            reads.append(device_id)
            return await real_get(device_id)

        monkeypatch.setattr(env.store, "get_device", counting_get)
        adapter = env.adapter
        assert await adapter._is_mqtt_device("btn", "http", button) is True
        assert await adapter._is_mqtt_device("wear", "http", wearable) is False
        assert reads == []
        adapter._mqtt_devices.clear()
        assert await adapter._is_mqtt_device("wear", "http") is False  # no record handed on: one read
        assert reads == ["wear"]
