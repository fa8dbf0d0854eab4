"""`sosbridge sim load` for the device kinds beyond HTTP and MQTT (docs/testing/simulator.md): CoAP, 4G
watches (TCP), SIA DC-09 panels, DIY buttons on a serial pty and Alexa voice requests, each over its real
wire to a real `sosbridge serve` process. Every accepted alert must be in the platform's own records
(the receiver's JSONL, read here, not the tool's report), and the report's counts must be what was sent."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from simulator.load import PROFILES
from simulator.load_kinds import load_identifiers
from tests.app.test_e2e_processes import bridge_env
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import Proc, sosbridge_cmd, start_bridge_process, start_receiver_process

DEVICES = 4


@dataclass
class Live:
    bridge: Proc
    receiver: Proc
    env: dict[str, str]
    admin: str
    workdir: Path
    ports: dict[str, int]

    def contacts(self) -> list[dict]:
        path = self.workdir / "contacts.jsonl"
        return [json.loads(line)["contact"] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One bridge with every listener on, and the sim's smart speaker trusted (made by `sim speaker`)."""
    workdir = tmp_path_factory.mktemp("load-kinds")
    made = subprocess.run(sosbridge_cmd("sim", "speaker", str(workdir / "speaker")), capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert made.returncode == 0, made.stderr
    speaker_env = dict(line.split("=", 1) for line in made.stdout.splitlines() if line.startswith("SOSBRIDGE_"))
    assert "SOSBRIDGE_ALEXA_TRUST_ROOTS" in speaker_env
    secret, token, admin = secrets.token_hex(12), secrets.token_hex(12), secrets.token_hex(12)
    bport, rport = free_port(), free_port()
    ports = {"coap": free_port(), "watch": free_port(), "dc09": free_port()}
    receiver = start_receiver_process(rport, secret, workdir / "contacts.jsonl", f"http://127.0.0.1:{bport}",
                                      token, workdir / "rx.log")
    env = bridge_env(workdir, rport, secret, token, admin) | speaker_env | {
        "SOSBRIDGE_COAP_ENABLED": "true", "SOSBRIDGE_COAP_PORT": str(ports["coap"]),
        "SOSBRIDGE_WATCH_PORT": str(ports["watch"]), "SOSBRIDGE_DC09_PORT": str(ports["dc09"]),
        "SOSBRIDGE_SERIAL_PORTS": f"diy={workdir / 'tty-diy'}",
    }
    bridge = start_bridge_process(env, bport, workdir / "bridge.log")
    try:
        yield Live(bridge, receiver, env, admin, workdir, ports)
    finally:
        bridge.stop()
        receiver.stop()


def register(live: Live, kind: str) -> tuple[Path, Path | None]:
    """Register the kind's devices on the live bridge; a device file (and a CoAP key file) for the sim."""
    lines, keys = [], {}
    with httpx.Client(timeout=10) as client:
        for i in range(DEVICES):
            doc = {"device_id": f"{kind}-{i}", "status": "exercise", "token": secrets.token_urlsafe(18),
                   "identifiers": load_identifiers(kind, i)}
            if PROFILES[kind]:
                doc["profile_id"] = PROFILES[kind]
            r = client.post(f"{live.bridge.url}/v1/devices", headers={"Authorization": f"Bearer {live.admin}"},
                            json=doc)
            assert r.status_code == 201, r.text
            lines.append(json.dumps(doc))
            if kind in ("coap", "dc09"):  # keys given the way an operator does, on the bridge's store
                key = secrets.token_hex(32) if kind == "coap" else f"hex:{secrets.token_hex(16)}"
                args = ("coap-key", doc["device_id"], "--key", key) if kind == "coap" else (
                    "dc09-key", doc["device_id"], key)
                run = subprocess.run(sosbridge_cmd("devices", *args), env={**os.environ, **live.env},
                                     capture_output=True, text=True, timeout=60, cwd=ROOT)
                assert run.returncode == 0, run.stderr
                keys[doc["device_id"]] = {"coap_hmac" if kind == "coap" else "dc09_key": key}
    devices = live.workdir / f"{kind}.jsonl"
    devices.write_text("\n".join(lines) + "\n")
    key_file = None
    if keys:
        key_file = live.workdir / f"{kind}-keys.json"
        key_file.write_text(json.dumps(keys))
    return devices, key_file


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["coap", "watch", "dc09", "serial", "alexa"])
def test_sim_load_kind_against_a_live_bridge(live: Live, kind: str) -> None:
    devices, keys = register(live, kind)
    wire = {
        "coap": ["--target", f"127.0.0.1:{live.ports['coap']}", "--keys-file", str(keys)],
        "watch": ["--target", f"127.0.0.1:{live.ports['watch']}"],
        "dc09": ["--target", f"127.0.0.1:{live.ports['dc09']}", "--keys-file", str(keys)],  # AES panels
        "serial": ["--serial-path", str(live.workdir / "tty-diy")],
        "alexa": ["--speaker-dir", str(live.workdir / "speaker")],
    }[kind]
    out = live.workdir / f"{kind}-report.json"
    run = subprocess.run(
        sosbridge_cmd("sim", "load", "--transport", kind, "--bridge-url", live.bridge.url, "--receiver-url",
                      live.receiver.url, "--devices-file", str(devices), "--rate", "8", "--duration", "0.5",
                      "--json-out", str(out), *wire),
        capture_output=True, text=True, timeout=100, cwd=ROOT)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    report = json.loads(out.read_text())
    assert {k: report[k] for k in ("transport", "planned", "sent", "accepted", "refused", "delivered", "lost",
                                   "escalated")} == {
        "transport": kind, "planned": DEVICES, "sent": DEVICES, "accepted": DEVICES, "refused": 0,
        "delivered": DEVICES, "lost": 0, "escalated": 0}, report
    assert report["latency_ms_p50"] > 0 and report["latency_ms_p99"] >= report["latency_ms_p50"]
    assert f"{DEVICES}/{DEVICES}" in run.stdout
    # The platform's own records: one alert contact for every device of this kind.
    alerted = {c["device"]["id"] for c in live.contacts() if c.get("msg_type") == "alert"}
    assert {f"{kind}-{i}" for i in range(DEVICES)} <= alerted


def test_a_kind_without_its_wire_option_is_a_usage_error(live: Live, tmp_path: Path) -> None:
    devices = tmp_path / "none.jsonl"
    devices.write_text("")
    run = subprocess.run(
        sosbridge_cmd("sim", "load", "--transport", "watch", "--bridge-url", live.bridge.url, "--receiver-url",
                      live.receiver.url, "--devices-file", str(devices)),
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2 and "--target" in run.stderr and "Traceback" not in run.stderr, run.stderr


@pytest.mark.timeout(90)
def test_a_serial_port_the_bridge_does_not_read_is_said_in_one_line(live: Live) -> None:
    """No answer on the pty (the bridge reads another path): no press is sent or counted, one line, exit 2."""
    devices = live.workdir / "serial.jsonl"  # the serial devices, registered by the test above or here
    if not devices.exists():
        devices, _ = register(live, "serial")
    run = subprocess.run(
        sosbridge_cmd("sim", "load", "--transport", "serial", "--bridge-url", live.bridge.url, "--receiver-url",
                      live.receiver.url, "--devices-file", str(devices), "--serial-path",
                      str(live.workdir / "tty-nobody-reads"), "--rate", "8", "--duration", "0.5"),
        capture_output=True, text=True, timeout=80, cwd=ROOT)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "did not answer" in lines[0], run.stderr


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["coap", "serial", "alexa"])
def test_sim_load_kind_on_the_embedded_stack(tmp_path: Path, kind: str) -> None:
    """Without --bridge-url the sim registers its own devices (a CoAP key, a pty, a trusted speaker)."""
    out = tmp_path / "report.json"
    run = subprocess.run(
        sosbridge_cmd("sim", "load", "--transport", kind, "--devices", "3", "--rate", "6", "--duration", "0.5",
                      "--json-out", str(out)),
        capture_output=True, text=True, timeout=80, cwd=ROOT)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    report = json.loads(out.read_text())
    assert (report["sent"], report["accepted"], report["delivered"], report["lost"], report["refused"]) == (
        3, 3, 3, 0, 0), report
