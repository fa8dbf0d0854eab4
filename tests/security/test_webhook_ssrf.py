"""Issue 23 item 4: an emergency contact's webhook never reaches the bridge's own networks. Loopback,
`localhost`, link-local and metadata addresses are refused at send time, on the resolved address, unless
`SOSBRIDGE_NOTIFY_WEBHOOK_ALLOW` names them (bridge/delivery/sinks/outbound.py).

The finding end to end: a carer's webhook pointing at the reference receiver's own control route
(`POST /control/mode/down`) switched the platform to "down" with one notification. A real bridge, a real
receiver and a real HTTP server on 127.0.0.1 that counts what reaches it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bridge.delivery.sinks.base import Delivered, Permanent
from bridge.delivery.sinks.notify import NotifyWebhookSink
from bridge.delivery.sinks.outbound import refused_address
from bridge.infra.listeners import parse_networks
from bridge.store.base import OutboxItem
from tests.support.bridges import running_bridge
from tests.support.factories import until
from tests.support.ports import free_port


@pytest.fixture
async def hook_server() -> AsyncIterator[tuple[int, list[str]]]:
    hits: list[str] = []

    async def hit(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", hit)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, hits
    finally:
        await asyncio.wait_for(runner.cleanup(), 10)


def item(url: str) -> OutboxItem:
    payload = json.dumps({"to": url, "text": "Iain raised a fall alert", "subject": "SOS"})
    return OutboxItem(item_id="i-1", alert_id="a-1", seq=1, msg_type="alert", idempotency_key="a-1:n1",
                      payload=payload, critical=False, created_at=time.time(), route="notify:webhook:0")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1.2.3"])
async def test_loopback_destinations_are_refused_and_never_reached(
        hook_server: tuple[int, list[str]], host: str) -> None:
    port, hits = hook_server
    sink = NotifyWebhookSink(timeout_s=5)
    try:
        outcome = await sink.deliver(item(f"http://{host}:{port}/control/mode/down"))
    finally:
        await sink.close()
    assert isinstance(outcome, Permanent) and "refused" in outcome.reason, outcome
    assert str(port) not in outcome.reason and "127." not in outcome.reason  # never the address
    assert hits == []


async def test_metadata_and_link_local_are_refused_without_a_connection() -> None:
    sink = NotifyWebhookSink(timeout_s=5)
    try:
        for url in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x", "http://10.1.2.3/x",
                    "http://100.100.100.200/x", "http://0.0.0.0:80/x"):
            outcome = await asyncio.wait_for(sink.deliver(item(url)), 5)
            assert isinstance(outcome, Permanent), (url, outcome)
    finally:
        await sink.close()


def test_public_addresses_pass_and_the_allow_list_opens_named_networks() -> None:
    assert refused_address("93.184.215.14", ()) is None
    assert refused_address("2606:4700::1111", ()) is None
    assert refused_address("10.20.0.5", ()) == "private"
    assert refused_address("100.64.1.1", ()) == "cgnat"  # RFC 6598, the carriers' NAT range
    assert refused_address("10.20.0.5", parse_networks("10.20.0.0/16")) is None
    assert refused_address("169.254.169.254", parse_networks("10.20.0.0/16")) == "metadata"


async def test_an_allowed_loopback_network_is_reached(hook_server: tuple[int, list[str]]) -> None:
    port, hits = hook_server
    sink = NotifyWebhookSink(timeout_s=5, allow=parse_networks("127.0.0.1/32"))
    try:
        for host in ("127.0.0.1", "localhost"):
            assert isinstance(await sink.deliver(item(f"http://{host}:{port}/carer")), Delivered)
    finally:
        await sink.close()
    assert hits == ["/carer", "/carer"]


async def test_a_carer_webhook_cannot_drive_the_platform_control_route(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None) as env:
        control = f"{env.receiver.base_url}/control/mode/down"
        doc = {"device_id": "w1", "person": {"name": "Iain", "emergency_contacts": [
            {"name": "Care team", "relation": "carer", "webhook_url": control}]}}
        async with httpx.AsyncClient(base_url=env.url, timeout=10) as c:
            r = await c.post("/v1/devices", json=doc, headers={"Authorization": f"Bearer {env.settings.admin_token}"})
            assert r.status_code == 201, r.text
            token = r.json()["token"]
            r = await c.post("/v1/alerts", headers={"Authorization": f"Bearer {token}"},
                             json={"kind": "medical", "message_id": secrets.token_hex(4)})
            assert r.status_code == 202, r.text
        alert_id = r.json()["alert_id"]

        async def settled() -> bool:
            rows = [o for o in await env.store.outbox_items(alert_id) if o.route.startswith("notify:")]
            return bool(rows) and all(o.state in ("dead", "delivered") for o in rows)

        await until(settled, 10)
        rows = [o for o in await env.store.outbox_items(alert_id) if o.route.startswith("notify:")]
        assert [o.state for o in rows] == ["dead"] and "refused" in (rows[0].last_error or "")
        async with httpx.AsyncClient(timeout=5) as c:
            health = await c.get(f"{env.receiver.base_url}/healthz")
        assert health.status_code == 200 and health.json()["mode"] == "normal", health.text
