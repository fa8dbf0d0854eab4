"""The shipped Mosquitto ACL (hardware/mosquitto/acl) on a real Mosquitto with a password file:
each device's credentials reach only its own topics, and the bridge's own user can do its job."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest

from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device
from device_adapters.mqtt import MqttAdapter
from device_adapters.mqtt.mosquitto import MosquittoProcess
from simulator.devices.mqtt import MqttPublisher
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import bridge_settings
from tests.support.paths import ROOT, need_binary

ACL = ROOT / "hardware" / "mosquitto" / "acl"


async def test_acl_confines_devices_to_their_own_topics(tmp_path: Path) -> None:
    need_binary("mosquitto")
    need_binary("mosquitto_passwd")
    pw = {name: secrets.token_hex(8) for name in ("sosbridge", "btn-1", "btn-2", "jane")}
    with MosquittoProcess(passwords=pw, acl_file=ACL) as broker:
        url = f"mqtt://sosbridge:{pw['sosbridge']}@127.0.0.1:{broker.port}"
        secret, token = secrets.token_hex(16), secrets.token_hex(16)
        async with EmbeddedReceiver(secret=secret, platform_token=token, auto_ack_s=None) as rx:
            settings = bridge_settings(tmp_path, rx.url, secret, token, mqtt_url=url,
                                       mqtt_client_id="sosbridge-acl")
            async with EmbeddedBridge(settings) as eb:
                store = eb.runtime.store
                for dev in ("btn-1", "btn-2"):
                    await store.put_device(Device(device_id=dev, tenant_id="acme", profile_id="sosbridge-mqtt-button"))
                await store.put_device(Device(device_id="jane-phone", profile_id="owntracks-phone",
                                              identifiers={"owntracks": "bob/phone"}))
                adapter = next(a for a in eb.runtime.adapters if isinstance(a, MqttAdapter))
                await adapter.wait_ready()

                btn1 = MqttPublisher(f"mqtt://127.0.0.1:{broker.port}", username="btn-1", password=pw["btn-1"])
                jane = MqttPublisher(f"mqtt://127.0.0.1:{broker.port}", username="jane", password=pw["jane"])
                sos = json.dumps({"kind": "sos", "message_id": "x"})
                # Denied by the ACL: another device's topic, another OwnTracks user's topic.
                await btn1.apublish("sosbridge/acme/btn-2/alert", sos)
                await jane.apublish("owntracks/bob/phone", json.dumps(
                    {"_type": "location", "lat": 48.85833, "lon": 2.29513, "t": "u", "tst": 1441984413}))
                # Allowed: its own topic.
                await btn1.apublish("sosbridge/acme/btn-1/alert", sos)
                await rx.wait_for(lambda cs: any(c["device"]["id"] == "btn-1" for c in cs), 10)
                await asyncio.sleep(0.5)
                assert {c["device"]["id"] for c in rx.contacts} == {"btn-1"}
                assert await store.open_alert_for_device("btn-2") is None

                # A wrong password is refused by the broker outright.
                with pytest.raises(ConnectionError):
                    bad = MqttPublisher(f"mqtt://127.0.0.1:{broker.port}", username="btn-2", password="wrong")
                    await asyncio.wait_for(bad.apublish("sosbridge/acme/btn-2/alert", sos), 15)
