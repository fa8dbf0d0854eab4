"""`sosbridge serve --workers 2`: contacts are sent from a delivery process the bridge starts itself.

Real processes only: `sosbridge serve`, `sosbridge receiver` and Mosquitto (tests/faults/harness.py), QoS 1
floods, kill -9 of the delivery process and of its parent. What must hold: 0 lost, a repeat only with the
same Idempotency-Key, the device told over its status topic, per-alert order, an outage seen by the
delivery process visible in /readyz, no delivery process left behind. docs/architecture.md ("Processes").
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.harness import Mosquitto, Stack, Tally, stack
from tests.faults.scenarios import _button_tally, _subscribed_publisher, alert_keys_by_device

TWO_PROCESSES = {"SOSBRIDGE_WORKERS": "2"}


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(x) for x in fh.read().split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def delivery_process(s: Stack) -> int:
    return int(wait_until("a delivery process", lambda: children(s.bridges[0].proc.pid), 30)[0])


def check_once_per_button(tally: Tally, s: Stack) -> None:
    """0 lost, and every button's presses made exactly one alert: a repeat carries the same key."""
    assert tally.lost == 0, tally.as_dict()
    keys = alert_keys_by_device(s)
    assert all(len(keys[device]) == 1 for device in tally.expected), {d: keys[d] for d in tally.expected
                                                                      if len(keys[d]) != 1}


def flood(s: Stack, broker: Mosquitto, buttons: int, client_id: str) -> tuple[Any, set[str]]:
    devices = s.register(buttons, prefix="btn", tenant_id="t1")
    pub = _subscribed_publisher(s, broker, client_id)
    for device_id, _ in devices:
        pub.publish(f"sosbridge/t1/{device_id}/alert",
                    json.dumps({"kind": "sos", "message_id": f"{device_id}-m1"}), qos=1)
    return pub, {device_id for device_id, _ in devices}


def statuses(broker: Mosquitto, devices: set[str], timeout: float = 30.0,
             wanted: tuple[str, ...] = ("forwarded", "acknowledged")) -> dict[str, dict[str, Any]]:
    """The retained status of each device's topic, once every device's state is one of `wanted` (by
    default: past `received`)."""
    import paho.mqtt.client as mqtt

    seen: dict[str, dict[str, Any]] = {}
    done = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        device = msg.topic.split("/")[2]
        seen[device] = json.loads(msg.payload)
        if all(seen.get(d, {}).get("state") in wanted for d in devices):
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="status-reader")
    sub.on_message = on_message
    sub.on_connect = lambda c, *_: c.subscribe("sosbridge/t1/+/status", qos=1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        done.wait(timeout)
    finally:
        sub.loop_stop()
        sub.disconnect()
    return seen


def flood_told_once_each(s: Stack, broker: Mosquitto, buttons: int) -> set[str]:
    """`buttons` buttons press once each: 0 lost, each contact sent once (nothing is killed here), and each
    device told `forwarded` (or later) on its status topic. The buttons' device ids."""
    pub, wanted = flood(s, broker, buttons, "flooder")
    tally = _button_tally(s, wanted, 60)
    pub.loop_stop()
    pub.disconnect()
    check_once_per_button(tally, s)
    assert tally.duplicates == 0
    told = statuses(broker, wanted)
    assert all(told.get(d, {}).get("state") in ("forwarded", "acknowledged") for d in wanted), \
        {d: told.get(d) for d in wanted if told.get(d, {}).get("state") not in ("forwarded", "acknowledged")}
    return wanted


def kill9_mid_flood(s: Stack, broker: Mosquitto, buttons: int, pid: int, most: float, alarm: str) -> None:
    """`buttons` buttons press once each; once 10 % to `most` of them are delivered (at random), `pid` (a
    child of the bridge) is killed: 0 lost, one alert per button, and the alarm `alarm` counted once."""
    pub, wanted = flood(s, broker, buttons, "flooder")
    share = int(len(wanted) * random.uniform(0.1, most))
    wait_until("part of the flood delivered", lambda: len(wanted & set(alert_keys_by_device(s))) >= share, 60)
    os.kill(pid, signal.SIGKILL)
    tally = _button_tally(s, wanted, 90, settle_s=s.lease_s + 0.5)
    pub.loop_stop()
    pub.disconnect()
    check_once_per_button(tally, s)
    metrics = httpx.get(f"{s.url(0)}/metrics", timeout=10).text
    assert f'sosbridge_operational_alarms_total{{reason="{alarm}"}} 1.0' in metrics


@pytest.mark.timeout(120)
def test_flood_through_the_delivery_process_loses_nothing_and_tells_each_device(broker: Mosquitto) -> None:
    with stack(extra_env=TWO_PROCESSES) as s:
        s.mqtt_url = broker.url + "?version=3.1.1"
        s.start_receiver()
        s.add_bridge()
        child = delivery_process(s)
        flood_told_once_each(s, broker, 200)
        assert children(s.bridges[0].proc.pid) == [child]  # the same process did it all


@pytest.mark.timeout(150)
def test_kill9_of_the_delivery_process_mid_flood_restarts_it_and_loses_nothing(broker: Mosquitto) -> None:
    with stack(extra_env=TWO_PROCESSES, lease_s=2.0) as s:
        s.mqtt_url = broker.url + "?version=3.1.1"
        s.start_receiver()
        s.add_bridge()
        child = delivery_process(s)
        kill9_mid_flood(s, broker, 300, child, 0.6, "delivery_process_exited")
        again = delivery_process(s)
        assert again != child and not alive(child)


@pytest.mark.timeout(60)
def test_kill9_of_the_bridge_ends_its_delivery_process() -> None:
    with stack(extra_env=TWO_PROCESSES) as s:
        s.start_receiver()
        s.add_bridge()
        child = delivery_process(s)
        s.bridges[0].kill9()
        wait_until("the delivery process to end", lambda: not alive(child), 10)


@pytest.mark.timeout(60)
def test_sigterm_stops_the_bridge_and_its_delivery_process() -> None:
    with stack(extra_env=TWO_PROCESSES) as s:
        s.start_receiver()
        s.add_bridge()
        child = delivery_process(s)
        s.bridges[0].proc.terminate()
        # The graceful path (uvicorn re-raises the SIGTERM once done; the watchdog's code would be 70).
        assert s.bridges[0].proc.wait(20) in (0, -signal.SIGTERM)
        wait_until("the delivery process to end", lambda: not alive(child), 10)
        log = s.bridges[0].log.read_text()
        assert "delivery_process_exited" not in log  # stopped, not restarted
        assert "did not exit with its channel" not in log  # it ended on its own when the channel closed


@pytest.mark.timeout(90)
def test_a_platform_outage_seen_by_the_delivery_process_shows_in_readyz() -> None:
    env = {**TWO_PROCESSES, "SOSBRIDGE_FALLBACK_AFTER_ATTEMPTS": "2"}
    with stack(extra_env=env) as s:
        s.add_bridge()  # no receiver: the delivery process's POSTs are refused
        delivery_process(s)
        device = s.register(1)[0]
        r = httpx.post(f"{s.url(0)}/v1/alerts", json={"kind": "sos", "message_id": "m1"},
                       headers={"Authorization": f"Bearer {device[1]}"}, timeout=10)
        assert r.status_code == 202

        def reasons() -> set[str]:
            body = httpx.get(f"{s.url(0)}/readyz", timeout=10).json()
            return {a["reason"] for a in body["alarms"]}

        wait_until("critical_contact_overdue in /readyz", lambda: "critical_contact_overdue" in reasons(), 30)
        assert httpx.get(f"{s.url(0)}/readyz", timeout=10).status_code == 503
        s.start_receiver()
        wait_until("the contact delivered", lambda: f"{r.json()['alert_id']}:1" in s.received(), 30)
        wait_until("the alarm cleared", lambda: "critical_contact_overdue" not in reasons(), 30)


@pytest.mark.timeout(120)
def test_a_cancel_never_overtakes_its_sos_through_the_delivery_process(broker: Mosquitto) -> None:
    with stack(extra_env=TWO_PROCESSES) as s:
        s.mqtt_url = broker.url + "?version=3.1.1"
        s.start_receiver("slow", slow_s=0.3)  # the SOS is still in flight when its cancel is queued
        s.add_bridge()
        delivery_process(s)
        devices = s.register(20, prefix="btn", tenant_id="t1")
        pub = _subscribed_publisher(s, broker, "canceller")
        for device_id, _ in devices:
            for n, action in enumerate(("alert", "cancel")):
                body = {"kind": "sos", "message_id": f"{device_id}-m1"} if action == "alert" else \
                    {"action": "cancel", "message_id": f"{device_id}-c{n}"}
                pub.publish(f"sosbridge/t1/{device_id}/alert", json.dumps(body), qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()

        def arrivals() -> dict[str, list[tuple[int, str]]]:
            out: dict[str, list[tuple[int, str]]] = defaultdict(list)
            path = s.workdir / "contacts.jsonl"
            for line in path.read_text().splitlines() if path.exists() else []:
                record = json.loads(line)
                alert_id, seq = record["idempotency_key"].rsplit(":", 1)
                out[alert_id].append((int(seq), record["contact"]["msg_type"]))
            return out

        def settled() -> bool:
            metrics = httpx.get(f"{s.url(0)}/metrics", timeout=10).text
            return "sosbridge_outbox_depth 0.0" in metrics and any(
                t == "cancel" for seqs in arrivals().values() for _, t in seqs)

        # A cancel before any attempt withdraws the SOS (nothing is sent); once the SOS is in flight the
        # cancel goes out as a stand-down after it. Either way, each alert's contacts arrive 1, then 2.
        wait_until("the outbox empty, a stand-down sent", settled, 60)
        got = arrivals()
        for alert_id, seqs in got.items():
            order = [seq for seq, _ in seqs]
            assert order == sorted(order), (alert_id, seqs)
            assert seqs[0] == (1, "alert"), (alert_id, seqs)


class RecordingPlatform:
    """A platform that records each contact as it arrives and answers 0.3 s later: a delivery cut short
    by the bridge's stop is on record, so a second sending of it after the restart shows as a duplicate
    (the reference receiver records only once it answers, and would hide that)."""

    def __init__(self, port: int, jsonl: Path) -> None:
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                record = {"idempotency_key": self.headers.get("Idempotency-Key"), "contact": json.loads(body)}
                with lock, jsonl.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                time.sleep(0.3)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_clean_stop_mid_flood_sends_nothing_twice(broker: Mosquitto, workers: str) -> None:
    """SIGTERM while contacts are being sent: those under way are answered and recorded before the bridge
    exits, so after the restart nothing goes out twice, and nothing is lost."""
    with stack(extra_env={"SOSBRIDGE_WORKERS": workers}, lease_s=2.0) as s:
        s.mqtt_url = broker.url + "?version=3.1.1"
        platform = RecordingPlatform(s.receiver_port, s.workdir / "contacts.jsonl")
        try:
            s.add_bridge()
            before = children(s.bridges[0].proc.pid)
            assert len(before) == int(workers) - 1
            pub, wanted = flood(s, broker, 100, "flooder")
            wait_until("part of the flood delivered", lambda: len(wanted & set(alert_keys_by_device(s))) >= 20, 60)
            s.restart_bridge(0)  # SIGTERM while four contacts are in flight, wait for the exit, start again
            assert not any(alive(pid) for pid in before)
            tally = _button_tally(s, wanted, 90, settle_s=s.lease_s + 0.5)
            pub.loop_stop()
            pub.disconnect()
        finally:
            platform.close()
        check_once_per_button(tally, s)
        assert tally.duplicates == 0, tally.as_dict()


@pytest.mark.timeout(60)
def test_three_workers_share_the_contacts_between_two_delivery_processes() -> None:
    with stack(extra_env={"SOSBRIDGE_WORKERS": "3"}) as s:
        s.start_receiver()
        s.add_bridge()
        wait_until("two delivery processes", lambda: len(children(s.bridges[0].proc.pid)) == 2, 30)
        expected = set()
        with httpx.Client(timeout=10) as client:
            for n, (_device, token) in enumerate(s.register(12)):
                r = client.post(f"{s.url(0)}/v1/alerts", json={"kind": "sos", "message_id": f"m{n}"},
                                headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 202
                expected.add(f"{r.json()['alert_id']}:1")
        wait_until("every contact delivered", lambda: expected <= set(s.received()), 30)
        assert sum(s.received()[k] for k in expected) == len(expected)


@pytest.mark.parametrize(("cpus", "want"), [({0}, 1), (None, 2)])
def test_the_default_is_two_processes_with_two_cpus_else_one(cpus: set[int] | None, want: int) -> None:
    """`os.sched_getaffinity` decides, so a container or `taskset` limited to one CPU runs one process."""
    available = os.sched_getaffinity(0)
    if cpus is None and len(available) < 2:
        pytest.skip("this machine gives the tests one CPU")
    code = ("import os, sys\n"
            f"if {cpus!r} is not None: os.sched_setaffinity(0, {cpus!r})\n"
            "from bridge.app.delivery_process import default_workers\n"
            "print(default_workers())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == str(want)
