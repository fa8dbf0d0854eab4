"""The reference receiver accepts our JSON, CAP and EIDO over real HTTP (delivered by the real webhook sink)
and validates each body with bridge.delivery.formats.validate; a broken body is refused with 422."""

from __future__ import annotations

import time

import httpx
import pytest

from bridge.delivery.formats import render
from bridge.delivery.sinks.base import Delivered
from bridge.delivery.sinks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from bridge.delivery.sinks.webhook import WebhookSink
from bridge.store.base import OutboxItem
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.formats_factory import BEN_NEVIS, contact, gnss

SECRET = "receiver-test-secret"


def _item(c) -> OutboxItem:  # type: ignore[no-untyped-def]
    return OutboxItem(
        item_id=f"it-{c.contact_id}",
        alert_id=c.alert_id,
        seq=c.seq,
        msg_type=c.msg_type,
        idempotency_key=c.contact_id,
        payload=c.to_json(),
        critical=True,
        created_at=time.time(),
    )


@pytest.mark.parametrize("fmt", ["json", "cap", "eido"])
async def test_receiver_accepts_and_validates_each_format(fmt: str) -> None:
    alert = contact(location=gnss(*BEN_NEVIS, accuracy_m=30))
    cancel = contact(msg_type="cancel", seq=2, reason="false alarm", location=gnss(*BEN_NEVIS, accuracy_m=30))
    async with EmbeddedReceiver(secret=SECRET, auto_ack_s=None) as rx:
        sink = WebhookSink(rx.url, SECRET, fmt)
        try:
            assert isinstance(await sink.deliver(_item(alert)), Delivered)
            assert isinstance(await sink.deliver(_item(cancel)), Delivered)
        finally:
            await sink.close()
        contacts = await rx.wait_for(lambda cs: len(cs) >= 2, timeout=5)
        records = rx.receiver.records
    assert [r["valid"] for r in records] == [True, True], [r["errors"] for r in records]
    assert [c["msg_type"] for c in contacts] == ["alert", "cancel"]
    assert all(c["alert_id"] == alert.alert_id for c in contacts)
    assert contacts[0]["location"]["lat"] == pytest.approx(BEN_NEVIS[0])


async def test_receiver_refuses_an_invalid_cap_body() -> None:
    body, ctype = render(contact(), "cap")
    broken = body.replace(b"<scope>Private</scope>", b"<scope>Secret</scope>")
    async with EmbeddedReceiver(secret=SECRET, auto_ack_s=None) as rx, httpx.AsyncClient() as client:
        response = await client.post(
            rx.url,
            content=broken,
            headers={"Content-Type": ctype, IDEMPOTENCY_HEADER: "k1", SIGNATURE_HEADER: sign(broken, SECRET, "k1")},
        )
        assert response.status_code == 422
        assert "scope" in response.json()["reason"]
        assert rx.receiver.records[0]["valid"] is False

