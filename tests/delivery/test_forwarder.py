"""Delivery: backoff with jitter and Retry-After, outages, permanent failures, fail-over of critical contacts."""

from __future__ import annotations

import json
import random
import secrets
from pathlib import Path

import httpx
import pytest

from bridge.app.embedded import EmbeddedBridge
from bridge.delivery.forwarder import backoff_delay
from bridge.delivery.sinks.webhook import classify, parse_retry_after
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import BridgeEnv, bridge_settings
from tests.support.factories import until


def test_backoff_grows_with_jitter_and_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 60, None, rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        step = min(60, 0.5 * 2 ** (n - 1))
        assert step / 2 <= d <= step
    assert backoff_delay(1, 0.5, 60, 30, rng) >= 30  # Retry-After is a floor
    assert backoff_delay(1, 0.5, 60, 3600, rng) <= 60  # ...capped at the maximum


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "Delivered"),
        (202, "Delivered"),
        (408, "Retry"),
        (429, "Retry"),
        (500, "Retry"),
        (503, "Retry"),
        (400, "Permanent"),
        (401, "Permanent"),
        (404, "Permanent"),
        (422, "Permanent"),
    ],
)
def test_classify(status: int, kind: str) -> None:
    assert type(classify(status, None)).__name__ == kind


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None


async def readyz(url: str) -> dict:
    async with httpx.AsyncClient() as c:
        return (await c.get(f"{url}/readyz")).json()


async def test_outage_fails_over_then_recovers(bridge_env: BridgeEnv) -> None:
    bridge_env.receiver.receiver.mode = "down"
    token = await bridge_env.add_device("w")
    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        r = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"})
        alert_id = r.json()["alert_id"]
    spool = Path(bridge_env.settings.effective_fallback_file)

    async def degraded() -> bool:
        # The spool file is created (0600) before its first line is written and fsynced in a worker thread:
        # wait for a whole line, not for the file.
        spooled = spool.exists() and spool.read_text().endswith("\n")
        return (await readyz(bridge_env.url))["status"] == "degraded" and spooled

    await until(degraded)
    spooled = [json.loads(line) for line in spool.read_text().splitlines()]
    assert [s["idempotency_key"] for s in spooled] == [f"{alert_id}:1"]
    assert bridge_env.receiver.contacts == []
    # The platform comes back: the primary still gets the contact, and the alarm clears.
    bridge_env.receiver.receiver.mode = "normal"
    await bridge_env.receiver.wait_for(lambda cs: len(cs) == 1, timeout=10)

    async def ready() -> bool:
        return (await readyz(bridge_env.url))["status"] == "ready"

    await until(ready)


async def test_permanent_failure(tmp_path: Path) -> None:
    secret = secrets.token_hex(8)
    async with EmbeddedReceiver(secret=secret, auto_ack_s=None) as rx:
        # The bridge signs with the wrong secret: the platform answers 401, a permanent failure.
        settings = bridge_settings(
            tmp_path, rx.url, "wrong-secret-0123456789", "tok-0123456789abcdef", fallback_after_attempts=2
        )
        async with EmbeddedBridge(settings) as eb:
            store = eb.runtime.store
            from bridge.core.model import Device

            await store.put_device(Device(device_id="w"))
            await store.set_credential("w", "token", "t" * 20)
            async with httpx.AsyncClient(base_url=eb.url, headers={"Authorization": "Bearer " + "t" * 20}) as c:
                battery = (await c.post("/v1/alerts", json={"kind": "low_battery"})).json()["alert_id"]
                sos = (await c.post("/v1/alerts", json={"kind": "sos"})).json()["alert_id"]

            async def settled() -> bool:
                b = await store.outbox_items(battery)
                s = await store.outbox_items(sos)
                return b[0].state == "dead" and s[0].fallback_sent

            await until(settled)
            sos_item = (await store.outbox_items(sos))[0]
            # The critical contact is never given up: still scheduled for retry, and spooled to the fallback.
            assert sos_item.state in ("retry", "inflight") and sos_item.last_error == "HTTP 401"
            status = await readyz(eb.url)
            assert status["status"] == "degraded"
            assert {a["reason"] for a in status["alarms"]} >= {"permanent_delivery_failure", "critical_contact_overdue"}
            metrics = eb.runtime.metrics.render().decode()
            assert 'sosbridge_operational_alarms_total{reason="permanent_delivery_failure"} 1.0' in metrics
            assert "sosbridge_degraded 1.0" in metrics
    assert rx.receiver.rejected >= 2


async def test_the_oldest_waiting_contacts_age_is_exported_and_falls_to_zero(bridge_env: BridgeEnv) -> None:
    """`sosbridge_outbox_oldest_age_seconds`: how far behind the platform is. It grows while a contact waits
    (the platform is down) and is 0 once everything is delivered."""

    def age() -> float:
        for line in bridge_env.bridge.runtime.metrics.render().decode().splitlines():
            if line.startswith("sosbridge_outbox_oldest_age_seconds "):
                return float(line.split()[1])
        raise AssertionError("sosbridge_outbox_oldest_age_seconds is not exported")

    bridge_env.receiver.receiver.mode = "down"
    token = await bridge_env.add_device("aged")
    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        r = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 202

    async def waited() -> bool:
        return age() >= 1.5  # the health refresh runs every second

    await until(waited)
    bridge_env.receiver.receiver.mode = "normal"
    await bridge_env.receiver.wait_for(lambda cs: len(cs) == 1, timeout=10)

    async def caught_up() -> bool:
        return age() == 0.0

    await until(caught_up)
