"""Two-way text over MQTT (issue 16 part 1) on a real Mosquitto: platform messages on the device's
`status/messages` sub-topic (never coalesced, discreet on a silent alert, deliveries recorded), and the
person's reply on `reply` through the ingress as a `message` contact in order with the alert's others."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from bridge.core.model import AlertKind, Observation
from tests.device_adapters.test_mqtt_adapter import Listener, make_env


async def test_platform_messages_reach_the_mqtt_device(tmp_path: Path, mosquitto_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running() as eb:
        listener = Listener(mosquitto_url, ["sosbridge/acme/text-btn/status/messages",
                                            "sosbridge/acme/text-btn/status"])
        try:
            await listener.ready()
            device = await env.add("text-btn", "sosbridge-mqtt-button")
            await env.sim(device).alert("duress", silent=True)
            [contact] = await env.contacts_for("text-btn")
            alert_id = contact["alert_id"]
            auth = {"Authorization": f"Bearer {env.settings.platform_token}"}
            async with httpx.AsyncClient(base_url=eb.url, headers=auth) as c:
                ids = []
                for text in ("We are on our way.", "Stay inside if you can."):  # back to back: none coalesced
                    r = await c.post(f"/v1/platform/alerts/{alert_id}/messages", json={"text": text})
                    assert r.status_code == 201, r.text
                    ids.append(r.json()["message_id"])
                await listener.wait_for(lambda t, b: t.endswith("/messages") and b["message_id"] == ids[1])
                got = [b for t, b in listener.messages if t.endswith("/status/messages")]
                assert [b["text"] for b in got] == ["We are on our way.", "Stay inside if you can."]
                assert all(b["discreet"] is True and b["alert_id"] == alert_id for b in got)
                await asyncio.sleep(0.2)
                view = (await c.get(f"/v1/platform/alerts/{alert_id}")).json()
                for mid in ids:
                    assert {"channel": "mqtt", "status": "sent"}.items() <= view["message_deliveries"][mid][0].items()
                # The text never lands on the retained status topic.
                assert all("text" not in b for t, b in listener.messages if t.endswith("/status"))
        finally:
            listener.close()


async def test_reply_topic_becomes_a_message_contact(tmp_path: Path, mosquitto_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        errors = Listener(mosquitto_url, ["sosbridge/acme/reply-btn/error"])
        try:
            await errors.ready()
            device = await env.add("reply-btn", "sosbridge-mqtt-button")
            sim = env.sim(device)
            await sim.alert("sos")
            await sim.reply("I fell in the kitchen\x07, door is unlocked", message_id="r-1")
            contacts = await env.contacts_for("reply-btn", n=2)
            assert [c["msg_type"] for c in contacts] == ["alert", "message"]
            assert contacts[1]["message"]["text"] == "I fell in the kitchen, door is unlocked"
            assert contacts[1]["message"]["transport"] == "mqtt" and contacts[1]["seq"] == 2
            alert_id = contacts[0]["alert_id"]
            # Bad replies are answered on the error topic and store nothing.
            await sim.reply("")
            await sim.reply("x" * 1001)
            await sim.reply("hello", alert_id="01NOSUCHALERT")
            await errors.wait_for(lambda t, b: b["code"] == "not_found")
            codes = [b["code"] for _, b in errors.messages]
            assert codes.count("invalid_text") == 2
            history = [h.event for h in await env.store.history(alert_id)]
            assert history.count("message_in") == 1
            assert (await env.store.get_alert(alert_id)).contact_seq == 2
        finally:
            errors.close()


@pytest.mark.parametrize(("silent", "allowed", "audible", "spoken"), [
    (False, False, False, True),  # a non-silent alert: spoken
    (True, False, True, False),  # silent: never spoken, even when the platform asks, unless the device allows
    (True, True, False, False),  # silent, allowed, but the platform did not ask
    (True, True, True, True),  # silent, the platform asked and the device record allows it
])
async def test_hermes_speaks_only_when_it_may(tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch,
                                              silent: bool, allowed: bool, audible: bool, spoken: bool) -> None:
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running() as eb:
        listener = Listener(mosquitto_url, ["hermes/tts/say", "sosbridge/acme/kitchen-sat/status/messages"])
        try:
            await listener.ready()
            await env.add("kitchen-sat", "rhasspy-hermes-satellite", identifiers={"hermes_site": "kitchen"},
                          audible_on_silent=allowed)
            result = await eb.runtime.ingress.observations.submit(Observation(
                device_id="kitchen-sat", transport="mqtt", kind=AlertKind.sos, silent=silent))
            auth = {"Authorization": f"Bearer {env.settings.platform_token}"}
            async with httpx.AsyncClient(base_url=eb.url, headers=auth) as c:
                r = await c.post(f"/v1/platform/alerts/{result.alert_id}/messages",
                                 json={"text": "Help is coming.", "language": "en-GB", "audible": audible})
                assert r.status_code == 201, r.text
            # The text topic always carries it; the status/messages publish precedes any speech.
            await listener.wait_for(lambda t, b: t.endswith("/status/messages"))
            await asyncio.sleep(0.5)
            said = [b for t, b in listener.messages if t == "hermes/tts/say"]
            if spoken:
                assert said == [{"text": "Help is coming.", "siteId": "kitchen", "id": r.json()["message_id"],
                                 "lang": "en-GB"}]
            else:
                assert said == []
        finally:
            listener.close()
