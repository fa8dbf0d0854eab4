"""Partitions (docs/testing/fault-suite.md): a fault-injecting TCP proxy (tests/faults/proxy.py) between
the bridge and Redis, the platform, or the MQTT broker. For each fault: alerts sent during it are either
acknowledged and delivered or not acknowledged (the device retries): 0 lost, no false acknowledgement;
readiness names what is wrong within its stated time; all is well again once the link heals."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.harness import Mosquitto, Stack, send_alert, stack, wait_delivered
from tests.faults.proxy import fault_proxy
from tests.faults.scenarios import _button_tally, _publish, alert_keys_by_device
from tests.support.paths import need_binary

# Stated detection times (docs/testing/fault-suite.md): Redis answers nothing -> the store's 5 s socket
# timeout; the platform answers nothing -> 3 attempts of SOSBRIDGE_PLATFORM_TIMEOUT_S (1 s here) plus
# backoff; a reset is seen at the next command or delivery.
REDIS_DETECT_S = 8.0
PLATFORM_DETECT_S = 8.0
# The broker link goes silent -> paho's keepalive: PINGREQ after MQTT_KEEPALIVE_S without a byte received,
# the link dropped MQTT_KEEPALIVE_S later; with one_way_reverse the broker keeps talking until its own
# 1.5 x keepalive expires. Then the transport monitor's 3 s grace. Reset: the next read fails at once.
MQTT_KEEPALIVE_S = 2
MQTT_DETECT_S = 3.5 * MQTT_KEEPALIVE_S + 1 + 3 + 2  # keepalive, paho's 1 s loop, grace, readiness polling
FAULT_ALERTS = 8


def readiness(url: str) -> dict[str, Any]:
    try:
        r = httpx.get(f"{url}/readyz", timeout=10)
        return dict(r.json()) | {"code": r.status_code}
    except httpx.HTTPError as exc:
        return {"code": 0, "error": repr(exc)}


def wait_readiness(url: str, ok: Callable[[dict[str, Any]], bool], timeout: float) -> tuple[float, dict[str, Any]]:
    """Seconds until readiness satisfies `ok` (raises after `timeout`), and that answer."""
    t0 = time.monotonic()
    body: dict[str, Any] = {}
    while time.monotonic() - t0 < timeout:
        body = readiness(url)
        if ok(body):
            return time.monotonic() - t0, body
        time.sleep(0.1)
    raise AssertionError(f"readiness not as expected within {timeout} s: {body}")


def flood(s: Stack, devices: list[tuple[str, str]], tag: str, acked: dict[str, str]) -> list[Any]:
    """Devices send one alert each on a pool, retrying until a 202 (like real devices)."""
    lock = threading.Lock()

    def one(device: tuple[str, str]) -> None:
        alert_id = send_alert(lambda: s.url(0), device, f"{tag}-{device[0]}", deadline_s=45)
        with lock:
            acked[device[0]] = alert_id

    pool = ThreadPoolExecutor(len(devices))
    futures = [pool.submit(one, d) for d in devices]
    pool.shutdown(wait=False)
    return futures


def store_down(body: dict[str, Any]) -> bool:
    return body.get("code") == 503 and body.get("store") is False


def platform_down(body: dict[str, Any]) -> bool:
    return body.get("code") == 503 and any(a["reason"] == "critical_contact_overdue" for a in body.get("alarms", []))


def ready(body: dict[str, Any]) -> bool:
    return body.get("code") == 200


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["blackhole", "delay", "reset", "half_open", "one_way"])
def test_redis_partition(mode: str, redis_url: str, tmp_path: Path) -> None:
    redis_port, db = redis_url.split(":")[2].split("/")  # the worker's own database (tests/support/workers.py)
    with fault_proxy(int(redis_port), delay_s=0.3) as proxy, stack(tmp_path, redis_url=f"redis://127.0.0.1:{proxy.port}/{db}",
                                                              lease_s=3.0) as s:
        s.start_receiver()
        s.add_bridge()
        devices = s.register(FAULT_ALERTS + 1)
        acked: dict[str, str] = {}
        for f in flood(s, devices[:1], "before", acked):
            f.result(timeout=30)
        proxy.mode = mode
        futures = flood(s, devices[1:], mode, acked)
        if mode == "delay":
            time.sleep(2.0)  # slow, not down: readiness may stay ready; alerts still get through
        else:
            _took, body = wait_readiness(s.url(0), store_down, REDIS_DETECT_S)
            assert "store_unavailable" in str(body) or body["store"] is False
        proxy.mode = "pass"
        for f in futures:
            f.result(timeout=60)
        tally = wait_delivered(s, {f"{a}:1" for a in acked.values()}, timeout=30)
        assert tally.lost == 0 and len(acked) == len(devices), tally.as_dict()
        assert len(set(acked.values())) == len(devices)  # a retried message id never made a second alert
        wait_readiness(s.url(0), ready, 15)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["blackhole", "delay", "reset", "half_open", "one_way"])
def test_platform_partition(mode: str, tmp_path: Path) -> None:
    with stack(tmp_path, lease_s=3.0) as s:
        with fault_proxy(s.receiver_port, delay_s=0.3) as proxy:
            s.extra_env = {"SOSBRIDGE_PLATFORM_URL": f"http://127.0.0.1:{proxy.port}/contacts",
                           "SOSBRIDGE_PLATFORM_TIMEOUT_S": "1", "SOSBRIDGE_FALLBACK_AFTER_ATTEMPTS": "3"}
            s.start_receiver()
            s.add_bridge()
            devices = s.register(FAULT_ALERTS + 1)
            acked: dict[str, str] = {}
            for f in flood(s, devices[:1], "before", acked):
                f.result(timeout=30)
            wait_delivered(s, {f"{a}:1" for a in acked.values()}, timeout=20)
            proxy.mode = mode
            for f in flood(s, devices[1:], mode, acked):
                f.result(timeout=30)  # intake does not depend on the platform: all acknowledged at once
            if mode != "delay":
                wait_readiness(s.url(0), platform_down, PLATFORM_DETECT_S)
            proxy.mode = "pass"
            tally = wait_delivered(s, {f"{a}:1" for a in acked.values()}, timeout=40)
            assert tally.lost == 0, tally.as_dict()
            wait_readiness(s.url(0), ready, 20)


def mqtt_down(body: dict[str, Any]) -> bool:
    return body.get("code") == 503 and any(p.get("adapter") == "mqtt" for p in body.get("transports", []))


def _status_watcher(broker_port: int, seen: list[tuple[str, dict[str, Any]]]) -> Any:
    """A device-side client that records every status the bridge publishes to the buttons."""
    import paho.mqtt.client as mqtt

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        with contextlib.suppress(ValueError):
            seen.append((m.topic.split("/")[2], json.loads(m.payload)))

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fault-status-watcher")
    sub.on_message = on_message
    sub.on_connect = lambda c, *_a: c.subscribe("sosbridge/t1/+/status", qos=1)
    sub.reconnect_delay_set(1, 1)
    sub.connect("127.0.0.1", broker_port)
    sub.loop_start()
    return sub


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["blackhole", "half_open", "one_way_reverse", "one_way", "reset", "delay"])
def test_broker_partition(mode: str, tmp_path: Path) -> None:
    """The bridge's link to the broker, devices publishing to the broker directly (QoS 1, until PUBACK).
    With SOSBRIDGE_MQTT_KEEPALIVE=2 a silent link (black-hole, half-open, either one-way) is dropped by
    the keepalive and readiness says `mqtt` within MQTT_DETECT_S; a reset is seen at once. Alerts the
    broker PUBACKed during the partition wait in the bridge's persistent session and are delivered once
    it heals, one alert per button; every status a button was sent names an alert the platform got."""
    import paho.mqtt.client as mqtt

    need_binary("mosquitto")
    with stack(tmp_path, lease_s=2.0) as s:
        broker = Mosquitto(s.workdir / "mosquitto")
        broker.start()
        try:
            with fault_proxy(broker.port, delay_s=0.3) as proxy:
                s.mqtt_url = f"mqtt://127.0.0.1:{proxy.port}?version=3.1.1"
                s.extra_env = {"SOSBRIDGE_MQTT_KEEPALIVE": str(MQTT_KEEPALIVE_S)}
                s.start_receiver()
                s.add_bridge()
                buttons = s.register(FAULT_ALERTS + 1, prefix="btn", tenant_id="t1")
                statuses: list[tuple[str, dict[str, Any]]] = []
                watcher = _status_watcher(broker.port, statuses)
                pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fault-pub-{mode}", clean_session=False)
                pub.reconnect_delay_set(1, 1)
                pub.connect("127.0.0.1", broker.port)  # devices reach the broker directly
                pub.loop_start()
                try:
                    _publish(pub, buttons[0][0])
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and buttons[0][0] not in alert_keys_by_device(s):
                        time.sleep(0.1)
                    wait_readiness(s.url(0), ready, 15)
                    proxy.mode = mode
                    for device_id, _ in buttons[1:]:
                        _publish(pub, device_id)  # PUBACKed by the broker: queued for the bridge's session
                    if mode == "delay":
                        time.sleep(2.0)  # slow, not down
                    else:
                        took, _body = wait_readiness(s.url(0), mqtt_down, MQTT_DETECT_S)
                        print(f"broker {mode}: /readyz said mqtt down after {took:.1f} s")
                    proxy.mode = "pass"
                    tally = _button_tally(s, {d for d, _ in buttons}, 60, settle_s=0.5)
                    assert tally.lost == 0, tally.as_dict()
                    by_device = alert_keys_by_device(s)
                    alert_ids = {key.rsplit(":", 1)[0] for keys in by_device.values() for key in keys}
                    # One alert per button: a redelivered press (the bridge's PUBACK lost) was deduplicated.
                    assert all(len({k.rsplit(":", 1)[0] for k in by_device[d]}) == 1 for d, _ in buttons), by_device
                    wait_readiness(s.url(0), ready, 40)
                    assert statuses, "the buttons were told nothing"
                    false_acks = [(d, b) for d, b in statuses if b.get("alert_id") not in alert_ids]
                    assert not false_acks, false_acks
                finally:
                    for client in (pub, watcher):
                        client.loop_stop()
                        client.disconnect()
        finally:
            broker.stop()
