"""`POST /v1/alerts` answers 2xx only once the alert is committed, with 16 requests in flight
(issue 27 item 6): a real `sosbridge serve` is killed with SIGKILL the moment 64 answers are in, while
the other requests are still being worked on, and every alert it had acknowledged is in its database."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sqlite3
from pathlib import Path

import httpx

from bridge.app.config import Settings
from bridge.core.model import Device, Person
from bridge.store import make_store
from tests.support.ports import free_port
from tests.support.processes import start_bridge_process

CLIENTS = 16
DEVICES = 400
KILL_AFTER = 64


async def seed(db: Path) -> dict[str, str]:
    store = make_store(Settings(db=str(db)))
    await store.open()
    tokens = {f"w{i:03d}": secrets.token_urlsafe(24) for i in range(DEVICES)}
    try:
        for device_id, token in tokens.items():
            await store.put_device(Device(device_id=device_id, person=Person(name=f"P {device_id}", language="en-GB")))
            await store.set_credential(device_id, "token", token)
    finally:
        await store.close()
    return tokens


async def flood_then_kill(url: str, tokens: dict[str, str], pid: int) -> tuple[dict[str, str], int]:
    """16 clients, one alert per device; SIGKILL once KILL_AFTER answers are in. Returns the acknowledged
    alert ids by device and how many requests failed (in flight when the process died)."""
    acknowledged: dict[str, str] = {}
    failed = 0
    killed = asyncio.Event()
    jobs = iter(tokens.items())

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failed
        for device_id, token in jobs:
            if killed.is_set():
                return
            try:
                r = await http.post("/v1/alerts", json={"kind": "sos", "message_id": f"k-{device_id}"},
                                    headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError:
                failed += 1
                return
            assert r.status_code == 202, r.text
            acknowledged[device_id] = r.json()["alert_id"]
            if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                killed.set()
                os.kill(pid, signal.SIGKILL)  # at once: the other clients' requests are mid-way

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return acknowledged, failed


def test_every_acknowledged_alert_survives_kill9_with_16_in_flight(tmp_path: Path) -> None:
    db = tmp_path / "bridge.db"
    tokens = asyncio.run(asyncio.wait_for(seed(db), 60))
    env = {
        "SOSBRIDGE_DB": str(db),
        "SOSBRIDGE_DATA_DIR": str(tmp_path),
        # Nothing to deliver to: the alerts stay queued, so the database alone says what was kept.
        "SOSBRIDGE_PLATFORM_URL": f"http://127.0.0.1:{free_port()}/contacts",
        "SOSBRIDGE_PLATFORM_SECRET": secrets.token_hex(16),
        "SOSBRIDGE_MQTT_URL": "",
        "SOSBRIDGE_COAP_ENABLED": "false",
    }
    bridge = start_bridge_process(env, free_port(), tmp_path / "bridge.log")
    try:
        acknowledged, failed = asyncio.run(asyncio.wait_for(flood_then_kill(bridge.url, tokens, bridge.proc.pid), 120))
        assert bridge.proc.wait(10) == -signal.SIGKILL
    finally:
        bridge.stop()
    assert len(acknowledged) >= KILL_AFTER
    with sqlite3.connect(db) as conn:  # the WAL the dead process left is read (and recovered) here
        stored = dict(conn.execute("SELECT alert_id, device_id FROM alerts").fetchall())
    lost = {d: a for d, a in acknowledged.items() if stored.get(a) != d}
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged alerts lost ({failed} requests in flight)"
