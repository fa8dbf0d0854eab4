"""Check-in timers live in the bridge's shared store (issue 24; docs/operations/checkin.md): two bridges on
one Redis see the same timer and exactly one raises it; a `sosbridge serve` killed with -9 keeps a running
timer, which is raised once after the restart. Real Redis, real processes, real HTTP; time is moved only
through the service's clock (`timers.clock`), as in tests/alerts/test_checkin.py."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx

from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device, Person
from bridge.store.sqlite import SqliteStore
from device_adapters.checkin import timers
from simulator.platform.receiver import EmbeddedReceiver
from tests.alerts.test_checkin import LAST_FIX, jump, service
from tests.app.test_e2e_processes import bridge_env
from tests.support.bridges import bridge_settings
from tests.support.ports import free_port
from tests.support.processes import start_bridge_process

TOKEN = "shared-walker-token-0123456789"


async def test_two_instances_on_one_redis_share_a_timer_and_raise_it_once(tmp_path: Path, redis_url: str) -> None:
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    url = f"{redis_url}?namespace=ck{secrets.token_hex(4)}"
    async with EmbeddedReceiver(secret=secret, platform_token=token, auto_ack_s=None) as rx:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a_settings = bridge_settings(tmp_path / "a", rx.url, secret, token, redis_url=url)
        b_settings = bridge_settings(tmp_path / "b", rx.url, secret, token, redis_url=url)
        async with EmbeddedBridge(a_settings) as a, EmbeddedBridge(b_settings) as b:
            await a.runtime.store.put_device(Device(device_id="walker-s", person=Person(name="Sam"),
                                                    last_location=LAST_FIX))
            await a.runtime.store.set_credential("walker-s", "token", TOKEN)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(headers=auth, timeout=10) as c:
                started = (await c.post(f"{a.url}/v1/checkin", json={"minutes": 10, "note": "night bus"})).json()
                # The other instance sees it, and extends it.
                seen = (await c.get(f"{b.url}/v1/checkin")).json()
                assert seen["timer_id"] == started["timer_id"] and seen["state"] == "running"
                extended = await c.post(f"{b.url}/v1/checkin/extend", json={"minutes": 5})
                assert extended.status_code == 200 and 890 <= extended.json()["remaining_s"] <= 900

                # Both instances' loops look at the timer once it ran out: one raises it.
                for svc in (service(a), service(b)):
                    jump(svc, 16 * 60)
                contact = await rx.first(lambda x: x["device"]["id"] == "walker-s")
                assert contact["kind"] == "check_in_missed"
                assert contact["attributes"]["checkin_timer_id"] == started["timer_id"]
                for svc in (service(a), service(b)):
                    jump(svc, 17 * 60)
                await asyncio.sleep(0.5)
                assert len([x for x in rx.contacts if x["device"]["id"] == "walker-s"]) == 1
                view = (await c.get(f"{a.url}/v1/checkin")).json()
                assert view["state"] == "expired"

                # Started on one instance, stopped on the other: nothing is raised.
                for svc in (service(a), service(b)):
                    jump(svc, 0)
                again = (await c.post(f"{a.url}/v1/checkin", json={"minutes": 5})).json()
                stopped = (await c.post(f"{b.url}/v1/checkin/stop")).json()
                assert stopped["timer_id"] == again["timer_id"] and stopped["state"] == "stopped"
                for svc in (service(a), service(b)):
                    jump(svc, 10 * 60)
                await asyncio.sleep(0.5)
                assert len([x for x in rx.contacts if x["device"]["id"] == "walker-s"]) == 1


async def test_a_timer_survives_kill_9_and_is_raised_once_after_the_restart(tmp_path: Path) -> None:
    secret, token, admin = secrets.token_hex(8), secrets.token_hex(8), secrets.token_hex(8)
    async with EmbeddedReceiver(secret=secret, platform_token=token, auto_ack_s=None) as rx:
        port = free_port()
        env = bridge_env(tmp_path, 0, secret, token, admin) | {"SOSBRIDGE_PLATFORM_URL": rx.url}
        store = SqliteStore(tmp_path / "bridge.db")
        await store.open()
        await store.put_device(Device(device_id="walker-k", person=Person(name="Kim"), last_location=LAST_FIX))
        await store.set_credential("walker-k", "token", TOKEN)
        await store.close()
        proc = await asyncio.to_thread(start_bridge_process, env, port, tmp_path / "bridge.log")
        try:
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as c:
                r = await c.post(f"{proc.url}/v1/checkin", json={"minutes": 20, "note": "late shift"})
                assert r.status_code == 201, r.text
                started = r.json()
        finally:
            await asyncio.to_thread(proc.kill9)
        # The answer came after the write: the row is in the store the killed process left behind.
        settings = bridge_settings(tmp_path, rx.url, secret, token, db=str(tmp_path / "bridge.db"))
        async with EmbeddedBridge(settings) as eb:
            svc = timers(eb.runtime)
            assert svc is not None
            running = await svc.current("walker-k")
            assert running is not None and running.timer_id == started["timer_id"] and running.note == "late shift"
            assert running.due_at - time.time() > 18 * 60
            jump(svc, 21 * 60)
            contact = await rx.first(lambda x: x["device"]["id"] == "walker-k")
            assert contact["kind"] == "check_in_missed" and contact["attributes"]["checkin_note"] == "late shift"
        async with EmbeddedBridge(settings) as eb:
            svc = timers(eb.runtime)
            assert svc is not None
            jump(svc, 30 * 60)
            await asyncio.sleep(0.5)
            assert len([x for x in rx.contacts if x["device"]["id"] == "walker-k"]) == 1
            assert await svc.current("walker-k") is None


async def test_an_alert_left_pending_by_a_dead_instance_is_raised_by_the_next(tmp_path: Path) -> None:
    """What an instance killed between "expired, alert pending" and the alert leaves in the store: the next
    instance to look raises it (once RAISE_RETRY_S passed) and settles the row."""
    from dataclasses import replace

    from bridge.alerts.checkin import RAISE_RETRY_S, Timer, to_row

    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    async with EmbeddedReceiver(secret=secret, platform_token=token, auto_ack_s=None) as rx:
        settings = bridge_settings(tmp_path, rx.url, secret, token)
        store = SqliteStore(settings.db)
        await store.open()
        await store.put_device(Device(device_id="walker-p", person=Person(name="Lou"), last_location=LAST_FIX))
        now = time.time()
        running = Timer("t-pending", "walker-p", "default", now - 1200, now - RAISE_RETRY_S - 5, "bin round")
        left = replace(running, state="expired", ended_at=running.due_at, pending_alert=True)
        assert await store.put_checkin(to_row(left), None) == 1
        await store.close()
        async with EmbeddedBridge(settings) as eb:
            contact = await rx.first(lambda x: x["device"]["id"] == "walker-p")
            assert contact["kind"] == "check_in_missed" and contact["attributes"]["checkin_timer_id"] == "t-pending"
            svc = timers(eb.runtime)
            assert svc is not None
            async with asyncio.timeout(5):
                while (settled := await svc.last("walker-p")) is None or settled.pending_alert:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert settled.state == "expired" and settled.alert_id == contact["alert_id"]
