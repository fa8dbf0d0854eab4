"""Issue 23 item 9 (device side): documents someone near the person can read call a duress alert `sos`
(the app's status and event stream, the Assist reply), while the platform gets the real kind. The Home
Assistant half (innocuous intent names in HA's log, retried until handed over) runs against a real Home
Assistant in tests/skills/test_homeassistant.py."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.bridges import running_bridge


async def test_device_facing_documents_of_a_duress_alert_say_sos(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None) as env:
        token = await env.add_device("p-1")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=env.url, timeout=10) as c:
            r = await c.post("/v1/alerts", headers=headers, json={"kind": "duress", "message_id": "d-1"})
            assert r.status_code == 202, r.text
            alert_id = r.json()["alert_id"]
            contact = await env.receiver.first(lambda x: x["alert_id"] == alert_id, 10)
            assert contact["kind"] == "duress" and contact["silent"] is True  # the platform knows
            status = (await c.get(f"/v1/alerts/{alert_id}", headers=headers)).json()
            assert status["kind"] == "sos"
            async with c.stream("GET", f"/v1/alerts/{alert_id}/events", headers=headers) as stream:
                first = b""
                async for chunk in stream.aiter_bytes():
                    first += chunk
                    if b"\n\n" in first:
                        break
            assert b'"kind":"sos"' in first and b"duress" not in first
            assert "duress" not in r.text
