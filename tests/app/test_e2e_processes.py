"""End to end with real processes: `sosbridge serve` and `sosbridge receiver`, kill -9 included."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx

from bridge.delivery.sinks.signing import sign
from tests.support.ports import free_port
from tests.support.processes import Proc, start_bridge_process, start_receiver_process


def bridge_env(tmp_path: Path, receiver_port: int, secret: str, token: str, admin: str) -> dict[str, str]:
    return {
        "SOSBRIDGE_DB": str(tmp_path / "bridge.db"),
        "SOSBRIDGE_DATA_DIR": str(tmp_path),
        "SOSBRIDGE_PLATFORM_URL": f"http://127.0.0.1:{receiver_port}/contacts",
        "SOSBRIDGE_PLATFORM_SECRET": secret,
        "SOSBRIDGE_PLATFORM_TOKEN": token,
        "SOSBRIDGE_ADMIN_TOKEN": admin,
        "SOSBRIDGE_RETRY_BASE_S": "0.1",
        "SOSBRIDGE_RETRY_MAX_S": "0.5",
        "SOSBRIDGE_LEASE_S": "2",
        "SOSBRIDGE_MQTT_URL": "",
        "SOSBRIDGE_COAP_ENABLED": "false",
    }


def register(bridge: Proc, admin: str, device_id: str) -> str:
    r = httpx.post(
        f"{bridge.url}/v1/devices",
        headers={"Authorization": f"Bearer {admin}"},
        json={"device_id": device_id, "person": {"language": "en-GB"}},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def received(receiver: Proc) -> list[dict]:
    return httpx.get(f"{receiver.url}/contacts").json()


def wait_for(fn, timeout: float = 20.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out")


def test_serve_and_receiver(tmp_path: Path) -> None:
    secret, token, admin = secrets.token_hex(8), secrets.token_hex(8), secrets.token_hex(8)
    bport, rport = free_port(), free_port()
    receiver = start_receiver_process(
        rport, secret, tmp_path / "contacts.jsonl", f"http://127.0.0.1:{bport}", token, tmp_path / "rx.log"
    )
    bridge = start_bridge_process(bridge_env(tmp_path, rport, secret, token, admin), bport, tmp_path / "bridge.log")
    try:
        device_token = register(bridge, admin, "watch-e2e")
        auth = {"Authorization": f"Bearer {device_token}"}
        body = {
            "kind": "medical",
            "message_id": "e2e-1",
            "location": {"lat": 55.9486, "lon": -3.1999, "accuracy_m": 11},
            "attributes": {"heart_rate": 31},
        }
        r = httpx.post(f"{bridge.url}/v1/alerts", json=body, headers=auth)
        assert r.status_code == 202
        alert_id = r.json()["alert_id"]
        records = wait_for(lambda: received(receiver))
        contact = records[0]["contact"]
        assert records[0]["idempotency_key"] == f"{alert_id}:1" and records[0]["valid"]
        assert contact["kind"] == "medical" and contact["attributes"] == {"heart_rate": 31}
        assert contact["location"]["lat"] == 55.9486 and contact["location"]["grid_ref"].startswith("NT 25")
        state = wait_for(
            lambda: httpx.get(f"{bridge.url}/v1/alerts/{alert_id}", headers=auth).json()["state"] == "acknowledged"
        )
        assert state
        # The stored line is the same contact, and a forged delivery is refused by the receiver.
        lines = [json.loads(x) for x in (tmp_path / "contacts.jsonl").read_text().splitlines()]
        assert lines[0]["contact"] == contact
        forged = b'{"schema":"sosbridge.contact/1"}'
        assert (
            httpx.post(
                f"{receiver.url}/contacts", content=forged, headers={"X-SOSBridge-Signature": sign(forged, "guess")}
            ).status_code
            == 401
        )
    finally:
        bridge.stop()
        receiver.stop()


def test_kill9_with_queued_alerts_loses_nothing(tmp_path: Path) -> None:
    secret, token, admin = secrets.token_hex(8), secrets.token_hex(8), secrets.token_hex(8)
    bport, rport = free_port(), free_port()
    env = bridge_env(tmp_path, rport, secret, token, admin)
    bridge = start_bridge_process(env, bport, tmp_path / "bridge.log")
    receiver: Proc | None = None
    try:
        tokens = [register(bridge, admin, f"dev-{i}") for i in range(5)]
        accepted: list[str] = []
        for n in range(30):
            t = tokens[n % len(tokens)]
            kind = "sos" if n % 2 else "low_battery"
            r = httpx.post(
                f"{bridge.url}/v1/alerts",
                json={"kind": kind, "message_id": f"m{n}"},
                headers={"Authorization": f"Bearer {t}"},
            )
            assert r.status_code == 202
            accepted.append(r.json()["alert_id"])
        bridge.kill9()  # the platform was down the whole time: everything is queued
        bridge = start_bridge_process(env, bport, tmp_path / "bridge.log")
        receiver = start_receiver_process(
            rport, secret, tmp_path / "contacts.jsonl", bridge.url, token, tmp_path / "rx.log"
        )
        # Escalations fold repeated presses into one open alert; each accepted alert id must arrive.
        expected = set(accepted)
        keys = wait_for(
            lambda: (
                (k := {r["idempotency_key"] for r in received(receiver)})
                and {key.split(":")[0] for key in k} >= expected
                and k
            ),
            timeout=30,
        )
        assert {key.split(":")[0] for key in keys} == expected
    finally:
        bridge.stop()
        if receiver:
            receiver.stop()


def test_kill9_mid_delivery_redelivers(tmp_path: Path) -> None:
    """Deliveries in flight when the bridge dies are delivered again after restart (at-least-once)."""
    secret, token, admin = secrets.token_hex(8), secrets.token_hex(8), secrets.token_hex(8)
    bport, rport = free_port(), free_port()
    receiver = start_receiver_process(
        rport, secret, tmp_path / "contacts.jsonl", f"http://127.0.0.1:{bport}", token, tmp_path / "rx.log"
    )
    assert httpx.post(f"{receiver.url}/control/mode/slow", params={"slow_s": 3}).json() == {"mode": "slow"}
    env = bridge_env(tmp_path, rport, secret, token, admin)
    bridge = start_bridge_process(env, bport, tmp_path / "bridge.log")
    try:
        tokens = [register(bridge, admin, f"dev-{i}") for i in range(3)]
        ids = []
        for t in tokens:
            r = httpx.post(f"{bridge.url}/v1/alerts", json={"kind": "fall"}, headers={"Authorization": f"Bearer {t}"})
            ids.append(r.json()["alert_id"])
        time.sleep(0.5)  # the three deliveries are now inside the slow receiver
        bridge.kill9()
        assert httpx.post(f"{receiver.url}/control/mode/normal").status_code == 200
        bridge = start_bridge_process(env, bport, tmp_path / "bridge.log")
        records = wait_for(
            lambda: (r := received(receiver)) and {x["contact"]["alert_id"] for x in r} >= set(ids) and r, timeout=30
        )
        keys = [r["idempotency_key"] for r in records]
        assert set(keys) == {f"{i}:1" for i in ids}
        assert all(keys.count(k) >= 1 for k in set(keys))
    finally:
        bridge.stop()
        receiver.stop()
