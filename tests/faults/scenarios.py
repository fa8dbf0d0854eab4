"""Fault scenarios. Each runs a real stack, injects one kind of fault into a stream of alerts, and returns
the Tally (delivered / lost / duplicates). Counts and durations are parameters: the pytest suite uses
small ones, `python -m tests.faults` large ones.

Every alert comes from its own device, so each accepted alert is exactly one expected idempotency key
(`<alert_id>:1`) and repeated presses never fold into escalations that would blur the count.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.faults.harness import (
    FAULT_WORKERS,
    Mosquitto,
    RedisServer,
    Stack,
    Tally,
    later,
    send_alert,
    stack,
    wait_delivered,
)


def _stream(s: Stack, devices: list[tuple[str, str]], urls: list[str], gap_s: float = 0.0) -> set[str]:
    """Send one alert per device, round-robin over `urls`; a failed bridge's share moves to the next."""
    expected: set[str] = set()
    for n, device in enumerate(devices):
        turn = [n]

        def url(turn: list[int] = turn) -> str:
            # Each retry tries the next bridge: a device (or a load balancer) fails over.
            turn[0] += 1
            return urls[turn[0] % len(urls)]

        expected.add(send_alert(url, device, f"{device[0]}-m1") + ":1")
        if gap_s:
            time.sleep(gap_s)
    return expected


def kill9_stream(workdir: Path | None, alerts: int, redis_url: str | None, rng: random.Random) -> Tally:
    """kill -9 the (only) bridge at a random moment of the stream, restart it, keep sending."""
    with stack(workdir, redis_url=redis_url, lease_s=2.0) as s:
        s.start_receiver()
        s.add_bridge()
        devices = s.register(alerts)
        killer = later(rng.uniform(0.05, 0.6), lambda: s.bridges[0].kill9())
        restarter = threading.Thread(target=lambda: (killer.join(), s.restart_bridge(0)), daemon=True)
        restarter.start()
        expected = _stream(s, devices, [s.url(0)], gap_s=0.01)
        restarter.join(30)
        return wait_delivered(s, expected, settle_s=s.lease_s + 0.5)


def two_instances(redis_url: str, alerts: int, kill: bool, rng: random.Random, workdir: Path | None = None) -> Tally:
    """Two `sosbridge serve` on one Redis namespace; devices alternate between them. With kill=True,
    bridge 0 is killed -9 mid-stream and never comes back: bridge 1 takes over its queue."""
    with stack(workdir, redis_url=redis_url, lease_s=2.0, ack_via=1) as s:
        s.start_receiver()
        s.add_bridge()
        s.add_bridge()
        devices = s.register(alerts)
        urls = [s.url(0), s.url(1)]
        if kill:
            later(rng.uniform(0.1, 0.8), lambda: s.bridges[0].kill9())
        expected = _stream(s, devices, urls, gap_s=0.01)
        return wait_delivered(s, expected, settle_s=s.lease_s + 0.5)


def redis_restart(alerts: int, down_s: float, rng: random.Random, workdir: Path | None = None) -> Tally:
    """kill -9 redis-server (appendonly yes, appendfsync always) mid-stream; restart it after down_s."""
    with stack(workdir, lease_s=2.0) as s:
        server = RedisServer(s.workdir / "redis", durable=True)
        server.start()
        s.redis_url = server.url
        try:
            s.start_receiver()
            s.add_bridge()
            devices = s.register(alerts)
            later(rng.uniform(0.1, 0.6), lambda: (server.kill9(), time.sleep(down_s), server.start()))
            expected = _stream(s, devices, [s.url(0)], gap_s=0.01)
            return wait_delivered(s, expected, timeout=60 + down_s, settle_s=s.lease_s + 0.5)
        finally:
            s.close()
            server.stop()


def receiver_down(
    alerts: int, down_s: float, redis_url: str | None, rng: random.Random, workdir: Path | None = None
) -> Tally:
    """The contact platform's process is stopped for down_s (connection refused), then started again."""
    with stack(workdir, redis_url=redis_url, lease_s=3.0) as s:
        s.start_receiver()
        s.add_bridge()
        devices = s.register(alerts)

        def outage() -> None:
            assert s.receiver is not None
            s.receiver.kill9()
            time.sleep(down_s)
            s.start_receiver()

        fault = later(rng.uniform(0.05, 0.3), outage)
        expected = _stream(s, devices, [s.url(0)], gap_s=0.02)
        fault.join(down_s + 30)
        return wait_delivered(s, expected, timeout=60, settle_s=1.0)


def receiver_slow(alerts: int, slow_s: float, redis_url: str | None, workdir: Path | None = None) -> Tally:
    """Every delivery takes slow_s at the platform (under the 10 s webhook timeout and the lease)."""
    with stack(workdir, redis_url=redis_url, lease_s=slow_s * 3) as s:
        s.start_receiver("slow", slow_s)
        s.add_bridge()
        devices = s.register(alerts)
        expected = _stream(s, devices, [s.url(0)])
        # The harness runs FAULT_WORKERS deliveries at a time.
        return wait_delivered(s, expected, timeout=30 + slow_s * (alerts / FAULT_WORKERS + 2), settle_s=0.5)


def _subscribed_publisher(s: Stack, broker: Mosquitto, client_id: str, *, reconnect: bool = False,
                          inflight: int | None = None) -> Any:
    """A persistent-session QoS 1 publisher, returned once a probe button's alert reached the platform: from
    then on the bridge's subscription certainly exists and no press can fall before it."""
    import paho.mqtt.client as mqtt

    probe = s.register(1, prefix="probe", tenant_id="t1")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    if reconnect:
        pub.reconnect_delay_set(0.1, 1)
    if inflight is not None:
        pub.max_inflight_messages_set(inflight)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    _publish(pub, probe[0][0])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and probe[0][0] not in alert_keys_by_device(s):
        time.sleep(0.05)
    return pub


def mosquitto_restart(alerts: int, down_s: float, rng: random.Random, workdir: Path | None = None) -> Tally:
    """An MQTT alert stream (QoS 1, one alert per button) survives a broker restart mid-stream.

    The publisher behaves like a real button: it waits for PUBACK and republishes the same message_id
    when it does not get one. Keys here are device ids: expected is one alert contact per button."""
    with stack(workdir, lease_s=2.0) as s:
        broker = Mosquitto(s.workdir / "mosquitto")
        broker.start()
        s.mqtt_url = broker.url + "?version=3.1.1"
        try:
            s.start_receiver()
            s.add_bridge()
            devices = s.register(alerts, prefix="btn", tenant_id="t1")
            pub = _subscribed_publisher(s, broker, "fault-publisher", reconnect=True)
            later(rng.uniform(0.1, 0.5), lambda: (broker.stop(), time.sleep(down_s), broker.start()))
            for device_id, _ in devices:
                _publish(pub, device_id)
                time.sleep(0.01)
            pub.loop_stop()
            pub.disconnect()
            return _button_tally(s, {device_id for device_id, _ in devices}, 60 + down_s, settle_s=s.lease_s + 0.5)
        finally:
            s.close()
            broker.stop()


def kill9_mqtt_flood(
    alerts: int, rng: random.Random, redis_url: str | None = None, workdir: Path | None = None
) -> Tally:
    """kill -9 the bridge at a random moment while it works through a QoS 1 flood, then restart it.

    Every button's press is published at once (the broker holds them for the bridge's persistent
    session). The bridge acknowledges a message only after the group commit that holds its alert; a
    message it had not yet acknowledged when killed is delivered again to the restarted bridge. An
    acknowledgement before the commit would lose exactly the messages of the batch being written."""
    with stack(workdir, redis_url=redis_url, lease_s=2.0) as s:
        broker = Mosquitto(s.workdir / "mosquitto")
        broker.start()
        s.mqtt_url = broker.url + "?version=3.1.1"
        try:
            s.start_receiver()
            s.add_bridge()
            devices = s.register(alerts, prefix="btn", tenant_id="t1")
            pub = _subscribed_publisher(s, broker, "fault-flooder")
            infos = [
                pub.publish(f"sosbridge/t1/{device_id}/alert",
                            json.dumps({"kind": "sos", "message_id": f"{device_id}-m1"}), qos=1)
                for device_id, _ in devices
            ]
            # Killed in the middle of the flood, while its batches are being committed: once a random
            # share (10-60 %) of it reached the platform.
            wanted = {device_id for device_id, _ in devices}
            share = int(alerts * rng.uniform(0.1, 0.6))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(wanted & set(alert_keys_by_device(s))) < share:
                time.sleep(0.005)
            s.bridges[0].kill9()
            for info in infos:
                info.wait_for_publish(timeout=30)  # the broker has every press, whatever the bridge did
            s.restart_bridge(0)
            pub.loop_stop()
            pub.disconnect()
            return _button_tally(s, wanted, 90, settle_s=s.lease_s + 0.5)
        finally:
            s.close()
            broker.stop()


def kill9_mqtt_flood_of_repeats(buttons: int, repeats: int, rng: random.Random,
                     workdir: Path | None = None) -> tuple[Tally, int, int]:
    """kill -9 the bridge at a random moment of an MQTT flood (issue 27): every button presses once, mixed
    with `repeats` repeats carrying the same message id (half byte for byte, half restamped), published
    without waiting. The bridge acknowledges a frame only once it is durable, so what it had not stored
    when killed is redelivered by the broker to its persistent session after the restart: every button's
    alert arrives (0 lost), and no repeat is ever counted as a press. Returns the tally (a contact posted
    again after the kill is at-least-once delivery, counted as a duplicate), the escalation updates the
    platform received and the second alerts any button raised (both must be 0)."""
    with stack(workdir, lease_s=2.0) as s:
        broker = Mosquitto(s.workdir / "mosquitto")
        broker.start()
        s.mqtt_url = broker.url
        try:
            s.start_receiver()
            s.add_bridge()
            devices = s.register(buttons, prefix="flood", tenant_id="t1")
            pub = _subscribed_publisher(s, broker, "fault-flooder", inflight=1000)
            frames: list[tuple[str, int | None]] = [(d, None) for d, _ in devices]
            frames += [(devices[rng.randrange(buttons)][0], rng.choice([None, k])) for k in range(repeats)]
            rng.shuffle(frames)
            killer = later(rng.uniform(0.05, 0.6), lambda: s.bridges[0].kill9())
            sent = []
            for device_id, stamp in frames:
                body: dict[str, object] = {"kind": "sos", "message_id": f"{device_id}-m1"}
                if stamp is not None:
                    body["ts"] = 1_700_000_000 + stamp  # a retransmission restamped: other bytes, same id
                sent.append(pub.publish(f"sosbridge/t1/{device_id}/alert", json.dumps(body), qos=1))
            killer.join(5)
            s.restart_bridge(0)
            for info in sent:  # the broker has every frame (it acknowledges the publisher, not the bridge)
                info.wait_for_publish(timeout=30)
            pub.loop_stop()
            pub.disconnect()
            tally = _button_tally(s, {d for d, _ in devices}, 60, settle_s=s.lease_s + 0.5)
            second_alerts = sum(len(keys) - 1 for keys in alert_keys_by_device(s).values())
            return tally, _updates(s), second_alerts
        finally:
            s.close()
            broker.stop()


def _updates(s: Stack) -> int:
    """Update contacts (escalations, locations) the platform received."""
    path = s.workdir / "contacts.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines()
               if '"msg_type": "update"' in line or '"msg_type":"update"' in line)


def broker_unreachable_at_start(alerts: int, workdir: Path | None = None) -> Tally:
    """The bridge starts while its MQTT broker is down: /readyz must say so (503, mqtt unreachable) and
    the log must name it; once the broker is up, /readyz is ready again and MQTT alerts are delivered."""
    import httpx
    import paho.mqtt.client as mqtt

    with stack(workdir, lease_s=2.0) as s:
        broker = Mosquitto(s.workdir / "mosquitto")  # its port is chosen, nothing listens there yet
        s.mqtt_url = broker.url + "?version=3.1.1"
        try:
            s.start_receiver()
            bridge = s.add_bridge()
            deadline = time.monotonic() + 20
            body: dict[str, object] = {}
            while time.monotonic() < deadline:
                r = httpx.get(f"{s.url(0)}/readyz", timeout=5)
                body = r.json()
                if r.status_code == 503 and body.get("transports"):
                    break
                time.sleep(0.2)
            assert body.get("transports") == [{"adapter": "mqtt", "reason": "unreachable"}], body
            assert "transport not ready" in bridge.log.read_text(), "an unreachable broker must be logged"
            broker.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and httpx.get(f"{s.url(0)}/readyz", timeout=5).status_code != 200:
                time.sleep(0.2)
            assert httpx.get(f"{s.url(0)}/readyz", timeout=5).status_code == 200, "ready once the broker is up"
            devices = s.register(alerts, prefix="btn", tenant_id="t1")
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fault-publisher", clean_session=False)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            for device_id, _ in devices:
                _publish(pub, device_id)
            pub.loop_stop()
            pub.disconnect()
            return _button_tally(s, {device_id for device_id, _ in devices}, 60)
        finally:
            s.close()
            broker.stop()


def _button_tally(s: Stack, wanted: set[str], wait_s: float, settle_s: float = 0.0) -> Tally:
    """Wait until every wanted button's alert arrived (or `wait_s`), then count alert contacts per button:
    one is right; a repeat, or a second alert id, is a duplicate."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not wanted <= set(alert_keys_by_device(s)):
        time.sleep(0.1)
    time.sleep(settle_s)
    received: Counter[str] = Counter()
    for device_id, keys in alert_keys_by_device(s).items():
        if device_id in wanted:
            received[device_id] = sum(keys.values())
    return Tally(wanted, received)


def _publish(pub: object, device_id: str) -> None:
    """Publish until PUBACK, the same message_id every time (the bridge dedupes repeats)."""
    payload = json.dumps({"kind": "sos", "message_id": f"{device_id}-m1"})
    deadline = time.monotonic() + 60
    while True:
        info = pub.publish(f"sosbridge/t1/{device_id}/alert", payload, qos=1)  # type: ignore[attr-defined]
        try:
            info.wait_for_publish(timeout=2)
            if info.is_published():
                return
        except (RuntimeError, ValueError):
            time.sleep(0.1)  # not connected: paho refuses; try again after it reconnects
        if time.monotonic() > deadline:
            raise TimeoutError(f"{device_id}: no PUBACK")


def alert_keys_by_device(s: Stack) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    path = s.workdir / "contacts.jsonl"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        contact = record.get("contact") or {}
        if contact.get("msg_type") == "alert":
            out.setdefault(contact["device"]["id"], Counter())[record["idempotency_key"]] += 1
    return out
