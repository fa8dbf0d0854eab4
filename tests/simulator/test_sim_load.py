"""`sosbridge sim load` against a live bridge (docs/testing/simulator.md): real `sosbridge serve` and
`sosbridge receiver` processes, devices with tokens from a device file, over HTTP and MQTT (Mosquitto).
The report's counts are what was sent, every alert is delivered once with no escalation, latencies come
from the platform's receipts, and a rate that was not reached is said."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.app.test_e2e_processes import bridge_env
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import Proc, sosbridge_cmd, start_bridge_process, start_receiver_process


def device_file(path: Path, bridge: Proc, admin: str, prefix: str, n: int, profile: str) -> Path:
    """Register n devices on the live bridge (admin API) and write them, tokens included, as a device file."""
    lines = []
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            doc = {"device_id": f"{prefix}-{i}", "profile_id": profile, "status": "exercise",
                   "token": secrets.token_urlsafe(18)}
            r = client.post(f"{bridge.url}/v1/devices", headers={"Authorization": f"Bearer {admin}"}, json=doc)
            assert r.status_code == 201, r.text
            lines.append(json.dumps(doc))
    path.write_text("\n".join(lines) + "\n")
    return path


def sim_load(tmp_path: Path, name: str, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    run = subprocess.run(sosbridge_cmd("sim", "load", *args, "--json-out", str(out)), capture_output=True,
                         text=True, timeout=90, cwd=ROOT)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    report = json.loads(out.read_text())
    report["stdout"] = run.stdout
    return report


@pytest.mark.timeout(120)
def test_sim_load_against_a_live_bridge_over_http_and_mqtt(tmp_path: Path, mosquitto_url: str) -> None:
    secret, token, admin = secrets.token_hex(12), secrets.token_hex(12), secrets.token_hex(12)
    bport, rport = free_port(), free_port()
    receiver = start_receiver_process(rport, secret, tmp_path / "contacts.jsonl", f"http://127.0.0.1:{bport}",
                                      token, tmp_path / "rx.log")
    env = bridge_env(tmp_path, rport, secret, token, admin) | {
        "SOSBRIDGE_MQTT_URL": mosquitto_url, "SOSBRIDGE_MQTT_CLIENT_ID": f"sim-load-{secrets.token_hex(3)}"}
    bridge = start_bridge_process(env, bport, tmp_path / "bridge.log")
    try:
        live = ["--bridge-url", bridge.url, "--receiver-url", receiver.url]
        http_devices = device_file(tmp_path / "http.jsonl", bridge, admin, "lh", 20, "sosbridge-http-wearable")
        report = sim_load(tmp_path, "http", *live, "--devices-file", str(http_devices), "--rate", "20",
                          "--duration", "1")
        assert {k: report[k] for k in ("transport", "planned", "sent", "accepted", "delivered", "lost",
                                       "escalated", "refused")} == {
            "transport": "http", "planned": 20, "sent": 20, "accepted": 20, "delivered": 20, "lost": 0,
            "escalated": 0, "refused": 0}
        assert report["latency_ms_p50"] > 0 and report["latency_ms_p99"] >= report["latency_ms_p50"]
        assert "20/20" in report["stdout"] and report["warnings"] == []

        mqtt_devices = device_file(tmp_path / "mqtt.jsonl", bridge, admin, "lm", 20, "sosbridge-mqtt-button")
        report = sim_load(tmp_path, "mqtt", *live, "--devices-file", str(mqtt_devices), "--transport", "mqtt",
                          "--mqtt-url", mosquitto_url, "--rate", "20", "--duration", "1")
        assert (report["sent"], report["accepted"], report["delivered"], report["lost"], report["escalated"]) == (
            20, 20, 20, 0, 0), report
        assert report["latency_ms_p50"] > 0

        # Asking for more than the devices and a rate no sender reaches: both said, counts still true.
        more = device_file(tmp_path / "more.jsonl", bridge, admin, "lx", 10, "sosbridge-http-wearable")
        report = sim_load(tmp_path, "fast", *live, "--devices-file", str(more), "--rate", "100000",
                          "--duration", "1")
        assert (report["planned"], report["sent"], report["delivered"]) == (10, 10, 10)
        assert any("one alert per device" in w for w in report["warnings"])
        assert any("sent" in w and "alerts/s" in w for w in report["warnings"]), report["warnings"]
        assert "warning:" in report["stdout"]
    finally:
        bridge.stop()
        receiver.stop()
