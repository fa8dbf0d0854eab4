"""Issue 23 item 6: a person's texts have a rate per device. 400 HTTP messages in 3.5 s became 400 police
contacts; now a burst goes out one contact each, the rest wait and go out together as one contact listing
every text in order: nothing lost, nothing flooding the platform (bridge/alerts/message_rate.py).

Real embedded bridge and reference receiver over HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from bridge.alerts.message_rate import MessageRate
from bridge.core.contact import ContactMessage
from bridge.core.model import utcnow
from tests.support.bridges import running_bridge

TEXTS = 60
BURST = 5


def texts_of(contacts: list[dict[str, Any]], alert_id: str) -> list[str]:
    out: list[str] = []
    for c in contacts:
        if c["alert_id"] == alert_id and c["msg_type"] == "message":
            batch = c.get("messages") or [c["message"]]
            out += [m["text"] for m in batch]
    return out


async def test_a_flood_of_texts_is_a_few_contacts_with_every_text_in_order(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None, device_message_burst=BURST,
                              device_message_per_min=120) as env:
        token = await env.add_device("p-1")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=env.url, timeout=10) as client:
            r = await client.post("/v1/alerts", headers=headers, json={"kind": "medical", "message_id": "a"})
            alert_id = r.json()["alert_id"]
            for i in range(TEXTS):
                sent = await client.post(f"/v1/alerts/{alert_id}/messages", headers=headers,
                                         json={"text": f"text {i:03d}", "message_id": f"m-{i}"})
                assert sent.status_code == 202, sent.text
            want = [f"text {i:03d}" for i in range(TEXTS)]
            rx = env.receiver
            await rx.wait_for(lambda cs: texts_of(cs, alert_id) == want, 15)
            # The device's own view keeps every text too.
            status = await client.get(f"/v1/alerts/{alert_id}", headers=headers)
            assert [m["text"] for m in status.json()["messages"] if m["from"] == "person"] == want
        messages = [c for c in rx.contacts if c["alert_id"] == alert_id and c["msg_type"] == "message"]
        assert BURST < len(messages) <= BURST + 3, len(messages)
        assert all(not c["messages"] for c in messages[:BURST])
        batch = messages[BURST]
        assert batch["messages"][-1] == batch["message"] and len(batch["messages"]) > 1


async def test_texts_waiting_at_stop_are_queued_not_lost(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None, device_message_burst=1,
                              device_message_per_min=0.01) as env:
        token = await env.add_device("p-2")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=env.url, timeout=10) as client:
            r = await client.post("/v1/alerts", headers=headers, json={"kind": "medical", "message_id": "a"})
            alert_id = r.json()["alert_id"]
            for i in range(3):
                sent = await client.post(f"/v1/alerts/{alert_id}/messages", headers=headers,
                                         json={"text": f"t{i}", "message_id": f"m-{i}"})
                assert sent.status_code == 202
        await env.receiver.wait_for(lambda cs: texts_of(cs, alert_id) == ["t0"], 10)
        runtime = env.bridge.runtime
        await asyncio.wait_for(runtime.pipeline.stop(), 10)  # as the runtime does when it stops
        rows = [o for o in await runtime.store.outbox_items(alert_id) if o.msg_type == "message"]
        assert len(rows) == 2
        assert [m["text"] for m in json.loads(rows[-1].payload)["messages"]] == ["t1", "t2"]


def test_admission_is_a_burst_then_one_batch_in_order() -> None:
    rate = MessageRate(burst=2, per_min=60)
    msgs = [ContactMessage(message_id=str(i), text=str(i), sent_at=utcnow(), transport="http") for i in range(5)]
    got = [rate.admit("d", "a", m, 0.0) for m in msgs]
    assert [len(g) for g in got] == [1, 1, 0, 0, 0]
    later = ContactMessage(message_id="5", text="5", sent_at=utcnow(), transport="http")
    assert [m.text for m in rate.admit("d", "a", later, 1.5)] == ["2", "3", "4", "5"]
