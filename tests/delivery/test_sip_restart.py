"""Nothing lost across a restart: a PSAP answers 503, the bridge stops with the contact still queued, a new
bridge on the same store delivers it to a PSAP that answers 200, under the same idempotency key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device
from tests.support.bridges import bridge_settings
from tests.support.sip import kamailio, scenario_answer, sipp

TOKEN = "w" * 24


@pytest.mark.timeout(60)
async def test_a_contact_refused_with_503_reaches_the_psap_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def settings(uri: str) -> Settings:
        monkeypatch.setenv("SOSBRIDGE_ROUTES", json.dumps([{"name": "default", "url": uri}]))
        return bridge_settings(tmp_path, "http://127.0.0.1:9/unused", "s" * 32, "p" * 32, lease_s=2.0)

    with sipp(tmp_path, scenario_answer("503 Service Unavailable")) as busy:
        async with EmbeddedBridge(settings(busy.uri())) as eb:
            await eb.runtime.store.put_device(Device(device_id="w"))
            await eb.runtime.store.set_credential("w", "token", TOKEN)
            async with httpx.AsyncClient(base_url=eb.url, timeout=10) as c:
                r = await c.post("/v1/alerts", json={"kind": "sos", "location": {"lat": 55.95, "lon": -3.19}},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 202, r.text
            alert_id = r.json()["alert_id"]
            # SIPp's scenario (take the MESSAGE, answer 503) completed: exit status 0.
            assert await asyncio.to_thread(busy.wait_exit, 15) == 0
            stored = await eb.runtime.store.get_alert(alert_id)
            assert stored is not None and stored.state.value == "received"  # not delivered

    with kamailio(tmp_path) as psap:
        async with EmbeddedBridge(settings(psap.uri())) as eb:
            # Kamailio's log file and the store offer nothing to await: poll both, under a deadline.
            async with asyncio.timeout(20):
                while not psap.received():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            async with asyncio.timeout(10):
                while (a := await eb.runtime.store.get_alert(alert_id)) is None or a.state.value == "received":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        (got,) = psap.received()
    assert f"<incidents>{alert_id}</incidents>".encode() in got.body
    assert got.idempotency_key.startswith(alert_id)
