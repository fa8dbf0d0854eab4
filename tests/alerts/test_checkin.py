"""Check-in timers for people at risk (issue 24 item 2; docs/operations/checkin.md), end to end on a real
bridge and receiver: started, extended and stopped over HTTP and MQTT (real Mosquitto), reminded before
running out, raised with the note and the last known location when not stopped, silent when started
silently, a coerced stop that looks stopped and raises a silent duress alert, and a restart while a timer
runs. Time is moved by giving the service a clock some minutes ahead (`timers.clock`), nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bridge.alerts.checkin import CheckinTimers, Timer, due_step, extended, reminder_at
from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device, Location, Person
from device_adapters.checkin import CheckinAdapter, timers
from device_adapters.checkin.voice import SPEECH
from simulator.devices.mqtt import MqttPublisher
from simulator.platform.receiver import EmbeddedReceiver
from tests.device_adapters.test_mqtt_adapter import Listener, make_env
from tests.support.bridges import BridgeEnv, bridge_settings, running_bridge
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import sosbridge_cmd

LAST_FIX = Location(lat=51.5007, lon=-0.1246, accuracy_m=9, source="gnss")
HOME = Location(lat=51.49, lon=-0.2, accuracy_m=30, source="registered_address")


# -- pure rules -------------------------------------------------------------------------------------------
def timer(minutes: float, reminded: bool = False) -> Timer:
    return Timer("t1", "d1", "acme", 1000.0, 1000.0 + minutes * 60, reminded=reminded)


def test_reminder_goes_five_minutes_before_or_half_way() -> None:
    assert reminder_at(timer(30)) == 1000.0 + 25 * 60
    assert reminder_at(timer(4)) == 1000.0 + 2 * 60


def test_due_step_reminds_once_then_expires() -> None:
    t = timer(30)
    assert due_step(t, 1000.0) == (None, reminder_at(t))
    assert due_step(t, reminder_at(t))[0] == "remind"
    done = Timer(**{**t.__dict__, "reminded": True})
    assert due_step(done, reminder_at(t)) == (None, t.due_at)
    assert due_step(done, t.due_at)[0] == "expire"
    assert due_step(Timer(**{**t.__dict__, "state": "stopped"}), 10**9) == (None, float("inf"))


def test_extend_counts_from_the_later_of_due_and_now_and_reminds_again() -> None:
    t = timer(30, reminded=True)
    assert extended(t, 10, 1000.0).due_at == t.due_at + 600
    assert extended(t, 10, t.due_at + 100).due_at == t.due_at + 700
    assert extended(t, 10, 1000.0).reminded is False


# -- helpers ----------------------------------------------------------------------------------------------
def service(eb: EmbeddedBridge) -> CheckinTimers:
    found = timers(eb.runtime)
    assert found is not None
    return found


def jump(svc: CheckinTimers, seconds: float) -> None:
    """The service's clock `seconds` ahead of the wall clock, and a look at the timers now."""
    svc.clock = lambda: time.time() + seconds
    svc.poke()


async def person_device(env: BridgeEnv, device_id: str) -> tuple[str, dict[str, str]]:
    token = await env.add_device(device_id, person=Person(name="Sam", language="en-GB"), registered_address=HOME,
                                 last_location=LAST_FIX)
    return token, {"Authorization": f"Bearer {token}"}


# -- HTTP -------------------------------------------------------------------------------------------------
async def test_http_timer_reminds_then_raises_with_the_note_and_last_location(tmp_path: Path) -> None:
    async with running_bridge(tmp_path) as env:
        _, auth = await person_device(env, "walker-1")
        svc = service(env.bridge)
        async with httpx.AsyncClient(base_url=env.url, headers=auth, timeout=10) as c:
            r = await c.post("/v1/checkin", json={"minutes": 20, "note": "walking home from the station"})
            assert r.status_code == 201, r.text
            started = r.json()
            assert started["state"] == "running" and 1190 <= started["remaining_s"] <= 1200
            r = await c.post("/v1/checkin/extend", json={"minutes": 10})
            assert r.status_code == 200 and 1790 <= r.json()["remaining_s"] <= 1800
            assert (await c.post("/v1/checkin/extend", json={"minutes": 0})).status_code == 422

            jump(svc, 26 * 60)  # past the reminder (5 minutes before the 30)
            async with asyncio.timeout(5):
                # The app polls, as a phone app without a push channel does.
                while not (await c.get("/v1/checkin")).json()["reminded"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert not [x for x in env.receiver.contacts if x["device"]["id"] == "walker-1"]

            jump(svc, 31 * 60)
            contact = await env.receiver.first(lambda x: x["device"]["id"] == "walker-1")
            assert contact["kind"] == "check_in_missed" and contact["silent"] is False
            assert contact["attributes"]["checkin_note"] == "walking home from the station"
            assert contact["location"]["lat"] == pytest.approx(LAST_FIX.lat)
            view = (await c.get("/v1/checkin")).json()
            assert view["state"] == "expired" and view["timer_id"] == started["timer_id"]
            assert (await c.post("/v1/checkin/stop")).status_code == 404  # nothing running any more


async def test_http_timer_started_silently_raises_a_silent_alert(tmp_path: Path) -> None:
    async with running_bridge(tmp_path) as env:
        _, auth = await person_device(env, "walker-2")
        async with httpx.AsyncClient(base_url=env.url, headers=auth, timeout=10) as c:
            r = await c.post("/v1/checkin", json={"minutes": 5, "note": "leaving his flat", "silent": True})
            assert r.status_code == 201
        jump(service(env.bridge), 6 * 60)
        contact = await env.receiver.first(lambda x: x["device"]["id"] == "walker-2")
        assert contact["kind"] == "check_in_missed" and contact["silent"] is True
        assert contact["attributes"]["checkin_note"] == "leaving his flat"


async def test_a_stop_with_the_duress_code_looks_stopped_and_raises_silent_duress(tmp_path: Path) -> None:
    async with running_bridge(tmp_path) as env:
        _, auth = await person_device(env, "walker-3")
        async with httpx.AsyncClient(base_url=env.url, headers=auth, timeout=10) as c:
            assert (await c.put("/v1/checkin/duress-code", json={"code": "4711"})).status_code == 204
            # A stop with another code (or none) is an ordinary stop: nothing goes to the platform.
            await c.post("/v1/checkin", json={"minutes": 30, "note": "first date"})
            plain = (await c.post("/v1/checkin/stop", json={"code": "1234"})).json()
            await c.post("/v1/checkin", json={"minutes": 30, "note": "first date"})
            coerced = (await c.post("/v1/checkin/stop", json={"code": "4711"})).json()
            assert coerced.keys() == plain.keys()
            assert coerced["state"] == plain["state"] == "stopped" and coerced["remaining_s"] == 0
            assert (await c.get("/v1/checkin")).json()["state"] == "stopped"
        contact = await env.receiver.first(lambda x: x["device"]["id"] == "walker-3")
        assert contact["kind"] == "duress" and contact["silent"] is True
        assert contact["attributes"]["checkin_note"] == "first date"
        await asyncio.sleep(0.3)  # the ordinary stop raised nothing, and the coerced one only this
        assert len([x for x in env.receiver.contacts if x["device"]["id"] == "walker-3"]) == 1
        # The timer never runs out afterwards.
        jump(service(env.bridge), 40 * 60)
        await asyncio.sleep(0.3)
        assert len([x for x in env.receiver.contacts if x["device"]["id"] == "walker-3"]) == 1


async def test_a_running_timer_survives_a_restart_and_is_raised_once(tmp_path: Path) -> None:
    secret, token = "s" * 32, "p" * 32
    async with EmbeddedReceiver(secret=secret, platform_token=token, auto_ack_s=None) as rx:
        settings = bridge_settings(tmp_path, rx.url, secret, token)
        async with EmbeddedBridge(settings) as eb:
            await eb.runtime.store.put_device(Device(device_id="walker-4", person=Person(name="Ali"),
                                                     last_location=LAST_FIX))
            await eb.runtime.store.set_credential("walker-4", "token", "walker-4-token-0123456789")
            auth = {"Authorization": "Bearer walker-4-token-0123456789"}
            async with httpx.AsyncClient(base_url=eb.url, headers=auth, timeout=10) as c:
                started = (await c.post("/v1/checkin", json={"minutes": 15, "note": "night shift"})).json()
        # The bridge is down; the timer ran out meanwhile. The next start raises it at once, and only once.
        async with EmbeddedBridge(settings) as eb:
            svc = service(eb)
            assert await svc.current("walker-4") is not None
            jump(svc, 16 * 60)
            contact = await rx.first(lambda x: x["device"]["id"] == "walker-4")
            assert contact["attributes"]["checkin_timer_id"] == started["timer_id"]
            assert contact["attributes"]["checkin_note"] == "night shift"
        async with EmbeddedBridge(settings) as eb:
            jump(service(eb), 20 * 60)
            await asyncio.sleep(0.3)
            assert len([x for x in rx.contacts if x["device"]["id"] == "walker-4"]) == 1
            assert await service(eb).current("walker-4") is None


# -- MQTT -------------------------------------------------------------------------------------------------
async def test_mqtt_button_starts_is_reminded_stops_and_raises(tmp_path: Path, mosquitto_url: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running() as eb:
        adapter = next(a for a in eb.runtime.adapters if isinstance(a, CheckinAdapter))
        assert await adapter._mqtt.wait_ready()
        listener = Listener(mosquitto_url, ["sosbridge/acme/lone-1/status/checkin", "sosbridge/acme/lone-1/error"])
        try:
            await listener.ready()
            await env.add("lone-1", "sosbridge-mqtt-button", last_location=LAST_FIX)
            pub = MqttPublisher(mosquitto_url)
            topic = "sosbridge/acme/lone-1/checkin"
            await pub.apublish(topic, json.dumps({"action": "start", "minutes": 10, "note": "meter reading, flat 4"}))
            started = await listener.wait_for(lambda t, b: b.get("event") == "started")
            assert started["note"] == "meter reading, flat 4" and started["state"] == "running"
            await pub.apublish(topic, json.dumps({"action": "dance"}))
            bad = await listener.wait_for(lambda t, b: t.endswith("/error"))
            assert bad["code"] == "invalid"

            svc = service(eb)
            jump(svc, 6 * 60)  # the reminder, 5 minutes before
            reminder = await listener.wait_for(lambda t, b: b.get("event") == "reminder")
            assert reminder["discreet"] is False and reminder["timer_id"] == started["timer_id"]
            await pub.apublish(topic, json.dumps({"action": "extend", "minutes": 10}))
            await listener.wait_for(lambda t, b: b.get("event") == "extended")
            await pub.apublish(topic, json.dumps({"action": "stop"}))
            stopped = await listener.wait_for(lambda t, b: b.get("event") == "stopped")
            assert stopped["state"] == "stopped"

            # A button press with no minutes: the default 30; not stopped, it raises the alert.
            await pub.apublish(topic, json.dumps({"action": "start"}))
            again = await listener.wait_for(lambda t, b: b.get("event") == "started"
                                            and b["timer_id"] != started["timer_id"])
            assert 29 * 60 <= again["remaining_s"] <= 30 * 60 + 360
            jump(svc, 40 * 60)
            [contact] = await env.contacts_for("lone-1")
            assert contact["kind"] == "check_in_missed"
            assert contact["attributes"]["checkin_timer_id"] == again["timer_id"]
            assert contact["location"]["lat"] == pytest.approx(LAST_FIX.lat)
        finally:
            listener.close()


async def test_mqtt_coerced_stop_and_a_silent_reminder(tmp_path: Path, mosquitto_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running() as eb:
        adapter = next(a for a in eb.runtime.adapters if isinstance(a, CheckinAdapter))
        assert await adapter._mqtt.wait_ready()
        listener = Listener(mosquitto_url, ["sosbridge/acme/lone-2/status/checkin"])
        try:
            await listener.ready()
            await env.add("lone-2", "sosbridge-mqtt-button")
            await eb.runtime.store.set_credential("lone-2", "checkin_duress", "9999")
            pub = MqttPublisher(mosquitto_url)
            topic = "sosbridge/acme/lone-2/checkin"
            await pub.apublish(topic, json.dumps({"action": "start", "minutes": 10, "silent": True}))
            await listener.wait_for(lambda t, b: b.get("event") == "started")
            jump(service(eb), 6 * 60)
            reminder = await listener.wait_for(lambda t, b: b.get("event") == "reminder")
            assert reminder["discreet"] is True
            await pub.apublish(topic, json.dumps({"action": "stop", "code": "9999"}))
            stopped = await listener.wait_for(lambda t, b: b.get("event") == "stopped")
            assert stopped["state"] == "stopped"
            [contact] = await env.contacts_for("lone-2")
            assert contact["kind"] == "duress" and contact["silent"] is True
        finally:
            listener.close()


async def test_hermes_satellite_starts_hears_the_reminder_and_stops(tmp_path: Path, mosquitto_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running() as eb:
        adapter = next(a for a in eb.runtime.adapters if isinstance(a, CheckinAdapter))
        assert await adapter._mqtt.wait_ready()
        site = f"hall-{int(time.time() * 1000) % 100000}"
        listener = Listener(mosquitto_url, ["hermes/dialogueManager/endSession", "hermes/tts/say"])
        try:
            await listener.ready()
            await env.add("sat-1", "rhasspy-hermes-satellite", identifiers={"hermes_site": site},
                          person=Person(name="Jo", language="en-GB"))
            pub = MqttPublisher(mosquitto_url)

            async def say_intent(name: str, session: str, **slots: object) -> dict[str, object]:
                doc = {"intent": {"intentName": name, "confidenceScore": 0.97}, "siteId": site, "sessionId": session,
                       "slots": [{"slotName": k, "value": {"kind": "Number", "value": v}} for k, v in slots.items()]}
                await pub.apublish(f"hermes/intent/{name}", json.dumps(doc))
                return await listener.wait_for(lambda t, b: t.endswith("endSession") and b.get("sessionId") == session)

            started = await say_intent("SosCheckIn", "s-1", minutes=20)
            assert started["text"] == SPEECH["en"]["started"].format(minutes="20 minutes")
            jump(service(eb), 16 * 60)
            reminder = await listener.wait_for(lambda t, b: t == "hermes/tts/say" and b.get("siteId") == site)
            assert reminder["text"] == SPEECH["en"]["reminder"].format(remaining="4 minutes")
            stopped = await say_intent("SosCheckInStop", "s-2")
            assert stopped["text"] == SPEECH["en"]["stopped"]
            assert await service(eb).current("sat-1") is None
        finally:
            listener.close()


# -- the reminder pushed to a webhook (an app's backend, Home Assistant) -----------------------------------
@contextlib.asynccontextmanager
async def webhook_server() -> AsyncIterator[tuple[str, asyncio.Queue[dict[str, Any]]]]:
    """A real HTTP endpoint on loopback that records what is POSTed to it."""
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await got.put(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", got
    finally:
        await runner.cleanup()


async def test_http_reminder_is_pushed_to_the_devices_webhook_and_shown_to_the_polling_app(tmp_path: Path) -> None:
    async with running_bridge(tmp_path) as env, webhook_server() as (url, got):
        _, auth = await person_device(env, "walker-5")
        # The administrator points the device at its webhook (the device itself cannot).
        proc = await asyncio.create_subprocess_exec(
            *sosbridge_cmd("devices", "checkin-reminder-url", "walker-5", url), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "SOSBRIDGE_DB": env.settings.db, "SOSBRIDGE_DATA_DIR": env.settings.data_dir})
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
        async with httpx.AsyncClient(base_url=env.url, headers=auth, timeout=10) as c:
            started = (await c.post("/v1/checkin", json={"minutes": 30, "note": "site visit"})).json()
            assert started["reminded_at"] is None and (await c.get("/v1/checkin")).json()["reminder"] is None
            jump(service(env.bridge), 26 * 60)
            body = await asyncio.wait_for(got.get(), 10)
            assert body == {"event": "checkin_reminder", "timer_id": started["timer_id"], "due_at": started["due_at"],
                            "remaining_s": body["remaining_s"], "language": "en-GB", "discreet": False,
                            "speech": SPEECH["en"]["reminder"].format(remaining="4 minutes")}
            assert 230 <= body["remaining_s"] <= 240
            async with asyncio.timeout(5):  # recorded just after it was pushed
                while not (view := (await c.get("/v1/checkin")).json())["reminded"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert view["reminded_at"] is not None
            # The pending reminder the app shows (it polls), in the person's language.
            assert view["reminder"] == {"at": view["reminded_at"], "discreet": False,
                                        "text": SPEECH["en"]["reminder_app"].format(remaining="4 minutes")}
            # A silent timer's reminder is discreet: no words for whoever is near.
            await c.post("/v1/checkin", json={"minutes": 30, "silent": True})  # started at the moved clock
            jump(service(env.bridge), 52 * 60)
            quiet = await asyncio.wait_for(got.get(), 10)
            assert quiet["discreet"] is True and "speech" not in quiet
        assert got.empty()
        assert not [x for x in env.receiver.contacts if x["device"]["id"] == "walker-5"]


def test_the_reminder_url_command_refuses_what_is_not_a_web_address(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(sosbridge_cmd("devices", "checkin-reminder-url", "x", "file:///etc/passwd"),
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "SOSBRIDGE_DB": str(tmp_path / "b.db"),
                                 "SOSBRIDGE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "URL: must be an http:// or https:// URL" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
