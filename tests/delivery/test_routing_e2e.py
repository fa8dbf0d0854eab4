"""Routing end to end: a Lothian route takes Edinburgh contacts as CAP, everything else goes to the default
platform as JSON, and a cancel follows its alert to the platform that saw it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest

from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import bridge_settings


async def test_routes_by_area_with_their_own_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_default, secret_lothian = secrets.token_hex(8), secrets.token_hex(8)
    async with (
        EmbeddedReceiver(secret=secret_default, auto_ack_s=None) as default_rx,
        EmbeddedReceiver(secret=secret_lothian, auto_ack_s=None) as lothian_rx,
    ):
        routes = [
            {
                "name": "lothian",
                "url": lothian_rx.url,
                "secret": secret_lothian,
                "format": "cap",
                "grid_squares": ["NT"],
            }
        ]
        monkeypatch.setenv("SOSBRIDGE_ROUTES", json.dumps(routes))
        settings = bridge_settings(tmp_path, default_rx.url, secret_default, "tok-0123456789abcdef")
        async with EmbeddedBridge(settings) as eb:
            await eb.runtime.store.put_device(Device(device_id="w"))
            await eb.runtime.store.set_credential("w", "token", "w" * 20)
            await eb.runtime.store.put_device(Device(device_id="g"))
            await eb.runtime.store.set_credential("g", "token", "g" * 20)
            async with httpx.AsyncClient(base_url=eb.url) as c:
                edinburgh = {"kind": "sos", "location": {"lat": 55.9486, "lon": -3.1999, "accuracy_m": 20}}
                r = await c.post("/v1/alerts", json=edinburgh, headers={"Authorization": "Bearer " + "w" * 20})
                alert_id = r.json()["alert_id"]
                glasgow = {"kind": "panic", "location": {"lat": 55.8609, "lon": -4.2514, "accuracy_m": 20}}
                await c.post("/v1/alerts", json=glasgow, headers={"Authorization": "Bearer " + "g" * 20})
                await lothian_rx.wait_for(lambda cs: len(cs) == 1)
                await default_rx.wait_for(lambda cs: len(cs) == 1)
                # The wearer walks out of Lothian and cancels: the stand-down still goes to Lothian.
                await c.post(
                    f"/v1/alerts/{alert_id}/location",
                    headers={"Authorization": "Bearer " + "w" * 20},
                    json={"location": {"lat": 55.86, "lon": -4.25, "accuracy_m": 20}},
                )
                await c.post(f"/v1/alerts/{alert_id}/cancel", headers={"Authorization": "Bearer " + "w" * 20})
                await lothian_rx.wait_for(lambda cs: len(cs) == 3)
    lothian = lothian_rx.receiver.records
    assert all(r["valid"] and "cap" in r["content_type"] for r in lothian)
    assert "<msgType>Cancel</msgType>" in lothian[2]["body"] and "<references>" in lothian[2]["body"]
    assert "0.02" in lothian[0]["body"]  # 20 m uncertainty as km in the CAP circle
    assert [c["kind"] for c in default_rx.contacts] == ["panic"]
    assert default_rx.receiver.records[0]["content_type"] == "application/json"
