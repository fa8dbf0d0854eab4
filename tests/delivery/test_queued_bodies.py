"""CAP/EIDO/PIDF-LO bodies are rendered once, when the contact is queued, and stored with the outbox row:
every delivery attempt sends those exact bytes (signed afresh), never a new rendering."""

from __future__ import annotations

import secrets
import sqlite3
import time
from pathlib import Path

import httpx

from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device
from bridge.delivery.formats import CONTENT_TYPES, render
from bridge.delivery.queued_bodies import QueuedBodies
from bridge.delivery.sinks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, check
from bridge.delivery.sinks.webhook import WebhookSink, render_body
from bridge.store.base import OutboxItem
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import bridge_settings
from tests.support.factories import until
from tests.support.formats_factory import BEN_NEVIS, contact, gnss, no_location_contact

SECRET = "queued-bodies-test-secret-0123456789"


def _item(route: str = "default", location: bool = True) -> OutboxItem:
    c = contact(location=gnss(*BEN_NEVIS, accuracy_m=30)) if location else no_location_contact()
    return OutboxItem(item_id=f"it-{route}", alert_id=c.alert_id, seq=c.seq, msg_type=c.msg_type,
                      idempotency_key=c.contact_id, payload=c.to_json(), critical=True, created_at=time.time(),
                      route=route)


def test_each_route_renders_in_its_own_format_and_json_stores_nothing() -> None:
    sinks = {r: WebhookSink("http://127.0.0.1:9/contacts", SECRET, r) for r in ("json", "cap", "eido", "pidf")}
    items = [_item(route) for route in ("json", "cap", "eido", "pidf", "unrouted")]
    QueuedBodies(sinks)(items)
    by_route = {i.route: i for i in items}
    assert (by_route["json"].body, by_route["unrouted"].body) == (None, None)  # JSON: the payload is the body
    for fmt in ("cap", "eido", "pidf"):
        item = by_route[fmt]
        expected, content_type = render(contact(location=gnss(*BEN_NEVIS, accuracy_m=30)), fmt)  # type: ignore[arg-type]
        assert item.body_format == fmt and item.body is not None and item.body.encode() == expected
        assert render_body(item, fmt) == (expected, content_type)


def test_a_render_that_fails_when_queued_leaves_it_to_delivery() -> None:
    """PIDF-LO needs a location: nothing is stored, and delivery reports it as before."""
    item = _item("pidf", location=False)
    QueuedBodies({"pidf": WebhookSink("http://127.0.0.1:9/contacts", SECRET, "pidf")})([item])
    assert (item.body, item.body_format) == (None, None)


def test_a_stored_body_in_another_format_is_not_sent() -> None:
    """A route's fallback in another format renders its own body; it never sends the primary's."""
    item = _item("cap")
    QueuedBodies({"cap": WebhookSink("http://127.0.0.1:9/contacts", SECRET, "cap")})([item])
    body, content_type = render_body(item, "eido")
    assert content_type == CONTENT_TYPES["eido"]
    assert body != (item.body or "").encode() and body.lstrip().startswith(b"{")


async def test_a_retried_cap_contact_sends_the_bytes_stored_when_queued(tmp_path: Path) -> None:
    """The platform refuses the first attempts (401: its secret is not the bridge's yet), so the critical
    contact is retried. Meanwhile the row's contact is wiped in the database: any attempt that rendered
    again would fail. Every attempt carries the body stored when queued, byte for byte, and once the
    secrets agree the platform verifies the signature over those bytes and accepts a valid CAP."""
    token = "tok-" + secrets.token_hex(8)
    async with EmbeddedReceiver(secret="not-yet-" + SECRET, keep_raw=True, auto_ack_s=None) as rx:
        settings = bridge_settings(tmp_path, rx.url, SECRET, token, platform_format="cap",
                                   fallback_after_attempts=1000)
        async with EmbeddedBridge(settings) as eb:
            store = eb.runtime.store
            await store.put_device(Device(device_id="w"))
            await store.set_credential("w", "token", "t" * 24)
            async with httpx.AsyncClient(base_url=eb.url, headers={"Authorization": "Bearer " + "t" * 24},
                                         timeout=10) as c:
                alert_id = (await c.post("/v1/alerts", json={"kind": "sos"})).json()["alert_id"]
            raw = rx.receiver.raw_requests
            assert raw is not None
            await until(lambda: len(raw) >= 1)
            [row] = await store.outbox_items(alert_id)
            assert row.body_format == "cap" and row.body is not None and row.body.startswith("<?xml")
            with sqlite3.connect(settings.db, timeout=10) as db:
                db.execute("UPDATE outbox SET payload = '{}' WHERE item_id = ?", (row.item_id,))
            seen = len(raw)
            await until(lambda: len(raw) >= seen + 2)
            rx.receiver.secret = SECRET
            record = await rx.first(lambda r: r.get("alert_id") == alert_id)
    stored = row.body.encode("utf-8")
    assert [body for _headers, body in raw] == [stored] * len(raw)
    assert {headers[IDEMPOTENCY_HEADER.lower()] for headers, _ in raw} == {f"{alert_id}:1"}
    headers, body = raw[-1]
    check(body, SECRET, headers[SIGNATURE_HEADER.lower()], f"{alert_id}:1")
    assert record["alert_id"] == alert_id
    assert rx.receiver.records[-1]["valid"] is True and rx.receiver.records[-1]["body"] == row.body
