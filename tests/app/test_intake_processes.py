"""`SOSBRIDGE_INTAKE_WORKERS`: frames are identified, decoded and stored in intake processes the bridge
starts itself (bridge/app/intake.py), on the Redis store.

Real processes only: `sosbridge serve`, `sosbridge receiver`, redis-server and Mosquitto
(tests/faults/harness.py), QoS 1 floods, kill -9 of an intake process mid-flood. What must hold: 0 lost,
each press one alert, the device told `forwarded` over its status topic, a cancel never overtaking its
SOS, the counters of the intake processes in the parent's /metrics, HTTP frames through them too, and a
clear refusal of the setting without Redis. docs/architecture.md#intake-on-more-than-one-core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.store.redis import RedisStore
from tests.delivery.test_delivery_processes import (
    alive,
    check_once_per_button,
    children,
    flood,
    flood_told_once_each,
    kill9_mid_flood,
    statuses,
    wait_until,
)
from tests.faults.harness import Mosquitto, RedisServer, Stack, stack
from tests.faults.scenarios import _button_tally, _subscribed_publisher, alert_keys_by_device

# One delivery process and two intake processes: a sender's frames all go to one of the two.
INTAKE = {"SOSBRIDGE_WORKERS": "2", "SOSBRIDGE_INTAKE_WORKERS": "2"}


def intake_processes(s: Stack, count: int = 2) -> list[int]:
    """The bridge's intake processes (its children running bridge.app.intake_process)."""

    def found() -> list[int]:
        pids = []
        for pid in children(s.bridges[0].proc.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if b"bridge.app.intake_process" in fh.read():
                        pids.append(pid)
            except FileNotFoundError:
                continue
        return pids if len(pids) == count else []

    return list(wait_until(f"{count} intake processes", found, 30))


@contextlib.contextmanager
def intake_bridge(redis_server: RedisServer, broker: Mosquitto | None = None, env: dict[str, str] | None = None,
                  **stack_args: Any) -> Iterator[tuple[Stack, list[int]]]:
    """A receiver and a bridge on `redis_server` (and `broker`, over MQTT 3.1.1) with its intake processes
    up (`env`, by default INTAKE), and their pids."""
    env = env or INTAKE
    with stack(extra_env=env, redis_url=redis_server.url, **stack_args) as s:
        if broker is not None:
            s.mqtt_url = broker.url + "?version=3.1.1"
        s.start_receiver()
        s.add_bridge()
        yield s, intake_processes(s, int(env["SOSBRIDGE_INTAKE_WORKERS"]))


@pytest.mark.timeout(120)
def test_a_flood_through_intake_processes_loses_nothing_and_tells_each_device(
        broker: Mosquitto, redis_server: RedisServer) -> None:
    with intake_bridge(redis_server, broker) as (s, pids):
        wanted = flood_told_once_each(s, broker, 200)
        assert intake_processes(s) == pids  # the same two did it all
        assert "intake, each sender in one (2" in s.bridges[0].log.read_text()  # the start-up summary says so
        # Their counts reach the parent's /metrics (sent at most 0.1 s after they are made): the flood's
        # alerts and the probe button's that showed the bridge subscribed.
        want = f'sosbridge_alerts_accepted_total{{kind="sos",outcome="created",transport="mqtt"}} {len(wanted) + 1}.0'
        wait_until("the intake processes' counts in /metrics",
                   lambda: want in httpx.get(f"{s.url(0)}/metrics", timeout=10).text, 10)


@pytest.mark.timeout(150)
def test_kill9_of_an_intake_process_mid_flood_restarts_it_and_loses_nothing(
        broker: Mosquitto, redis_server: RedisServer) -> None:
    with intake_bridge(redis_server, broker, lease_s=2.0) as (s, [victim, other]):
        # Frames it had not answered were not acknowledged: retried, and stored by its replacement.
        kill9_mid_flood(s, broker, 400, victim, 0.5, "intake_process_exited")
        again = intake_processes(s)
        assert other in again and victim not in again and not alive(victim)


@pytest.mark.timeout(120)
def test_a_cancel_never_overtakes_its_sos_through_intake_processes(
        broker: Mosquitto, redis_server: RedisServer) -> None:
    with intake_bridge(redis_server, broker) as (s, _pids):
        devices = s.register(30, prefix="btn", tenant_id="t1")
        pub = _subscribed_publisher(s, broker, "canceller")
        for device_id, _ in devices:
            pub.publish(f"sosbridge/t1/{device_id}/alert",
                        json.dumps({"kind": "sos", "message_id": f"{device_id}-m1"}), qos=1)
            pub.publish(f"sosbridge/t1/{device_id}/alert",
                        json.dumps({"action": "cancel", "message_id": f"{device_id}-c1"}), qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()

        # Each SOS was stored before its cancel, so every alert ends cancelled: a cancel that overtook its SOS
        # would find nothing to cancel, and the SOS after it would stay open.
        wanted = {device_id for device_id, _ in devices}
        told = statuses(broker, wanted, 60, wanted=("cancelled",))
        # In the store too: a retained status can only say `cancelled` wrongly, never hide an open alert.
        assert asyncio.run(asyncio.wait_for(still_open(redis_server.url, sorted(wanted)), 30)) == []
        assert all(told.get(d, {}).get("state") == "cancelled" for d in wanted), \
            {d: told.get(d) for d in wanted if told.get(d, {}).get("state") != "cancelled"}


async def still_open(redis_url: str, devices: list[str]) -> list[str]:
    """The devices with an open alert in the bridge's Redis store."""
    store = RedisStore(redis_url)
    await store.open()
    try:
        return [d for d in devices if await store.open_alert_for_device(d) is not None]
    finally:
        await store.close()


@pytest.mark.timeout(90)
def test_an_http_alert_goes_through_an_intake_process(redis_server: RedisServer) -> None:
    with intake_bridge(redis_server) as (s, _pids):
        expected = set()
        with httpx.Client(timeout=10) as client:
            for n, (_device, token) in enumerate(s.register(10)):
                r = client.post(f"{s.url(0)}/v1/alerts", json={"kind": "sos", "message_id": f"m{n}"},
                                headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 202, r.text
                expected.add(f"{r.json()['alert_id']}:1")
                again = client.post(f"{s.url(0)}/v1/alerts", json={"kind": "sos", "message_id": f"m{n}"},
                                    headers={"Authorization": f"Bearer {token}"})
                assert again.json()["alert_id"] == r.json()["alert_id"]  # the same press: the same alert
        wait_until("every contact delivered", lambda: expected <= set(s.received()), 30)
        assert sum(s.received()[k] for k in expected) == len(expected)


@pytest.mark.timeout(60)
def test_intake_processes_without_redis_are_refused_with_a_reason(tmp_path: Path) -> None:
    env = {**os.environ, "SOSBRIDGE_INTAKE_WORKERS": "2", "SOSBRIDGE_DATA_DIR": str(tmp_path)}
    env.pop("SOSBRIDGE_REDIS_URL", None)
    out = subprocess.run([sys.executable, "-m", "bridge.app.cli", "serve", "--port", "0"], env=env,
                         capture_output=True, text=True, timeout=50)
    assert out.returncode != 0
    assert "SOSBRIDGE_INTAKE_WORKERS needs the Redis store" in out.stdout + out.stderr


@pytest.mark.timeout(60)
def test_kill9_of_the_bridge_ends_its_intake_processes(redis_server: RedisServer) -> None:
    with intake_bridge(redis_server) as (s, pids):
        s.bridges[0].kill9()
        wait_until("the intake processes to end", lambda: not any(alive(pid) for pid in pids), 10)


@pytest.mark.timeout(60)
def test_sigterm_stops_the_bridge_and_its_intake_processes(redis_server: RedisServer) -> None:
    with intake_bridge(redis_server) as (s, pids):
        s.bridges[0].proc.terminate()
        assert s.bridges[0].proc.wait(20) in (0, -signal.SIGTERM)
        wait_until("the intake processes to end", lambda: not any(alive(pid) for pid in pids), 10)
        log = s.bridges[0].log.read_text()
        assert "intake_process_exited" not in log  # stopped, not restarted
        assert "did not exit with its channel" not in log  # each ended on its own when its channel closed


@pytest.mark.timeout(120)
def test_a_hung_intake_process_is_ended_and_its_frames_stored_by_the_next(
        broker: Mosquitto, redis_server: RedisServer) -> None:
    """SIGSTOP: the process neither answers nor dies. After the answer timeout the bridge ends it (a
    stopped process never reads the EOF: it is killed), starts another, and the frames it held are stored."""
    env = {**INTAKE, "SOSBRIDGE_INTAKE_WORKERS": "1", "SOSBRIDGE_INTAKE_ANSWER_TIMEOUT_S": "2"}
    with intake_bridge(redis_server, broker, env) as (s, [hung]):
        os.kill(hung, signal.SIGSTOP)
        try:
            pub, wanted = flood(s, broker, 30, "flooder")
            tally = _button_tally(s, wanted, 60)
            pub.loop_stop()
            pub.disconnect()
        finally:
            if alive(hung):
                os.kill(hung, signal.SIGCONT)
        check_once_per_button(tally, s)
        [again] = intake_processes(s, 1)
        assert again != hung and not alive(hung)
        assert "intake process did not answer in time" in s.bridges[0].log.read_text()
        metrics = httpx.get(f"{s.url(0)}/metrics", timeout=10).text
        assert 'sosbridge_operational_alarms_total{reason="intake_process_exited"} 1.0' in metrics


@pytest.mark.timeout(90)
def test_a_device_registered_through_the_api_is_known_to_the_intake_processes_at_once(
        broker: Mosquitto, redis_server: RedisServer) -> None:
    """A frame from an unregistered button is refused, and the intake process remembers the unknown sender
    (for SOSBRIDGE_DEVICE_CACHE_S, here a minute). Registering it through the API tells every intake
    process: its next press is stored at once, not a minute later."""
    env = {**INTAKE, "SOSBRIDGE_DEVICE_CACHE_S": "60"}
    with intake_bridge(redis_server, broker, env) as (s, _pids):
        pub = _subscribed_publisher(s, broker, "late-publisher")
        refused = 'sosbridge_alerts_rejected_total{reason="unknown_device",transport="mqtt"} 1.0'
        pub.publish("sosbridge/t1/late-0/alert", json.dumps({"kind": "sos", "message_id": "m0"}),
                    qos=1).wait_for_publish(10)
        wait_until("the unregistered press refused",
                   lambda: refused in httpx.get(f"{s.url(0)}/metrics", timeout=10).text, 15)
        s.register(1, prefix="late", tenant_id="t1")
        pub.publish("sosbridge/t1/late-0/alert", json.dumps({"kind": "sos", "message_id": "m1"}),
                    qos=1).wait_for_publish(10)
        wait_until("the registered button's alert delivered", lambda: "late-0" in alert_keys_by_device(s), 15)
        pub.loop_stop()
        pub.disconnect()
