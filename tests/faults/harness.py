"""Fault harness: real processes (sosbridge serve, sosbridge receiver, redis-server, mosquitto), a device-side
sender that retries like a real device, and the delivered / lost / duplicates tally.

Used by the pytest fault suite (small counts) and by `python -m tests.faults` / bench/faults.py (large).
Nothing here mocks the bridge: faults are signals to real processes and the receiver's own fault modes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bridge.infra.serving import wait_http, wait_port
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import Proc, start_bridge_process, start_receiver_process


def binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


FAULT_WORKERS = 4  # SOSBRIDGE_FORWARDER_WORKERS of every bridge the fault harness starts


@dataclass
class Tally:
    """Expected = one idempotency key per accepted alert; the receiver's records say what arrived."""

    expected: set[str]
    received: Counter[str]

    @property
    def delivered(self) -> int:
        return len(self.expected & set(self.received))

    @property
    def lost(self) -> int:
        return len(self.expected - set(self.received))

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.received.values() if n > 1)

    @property
    def duplicated_keys(self) -> int:
        return sum(1 for n in self.received.values() if n > 1)

    def as_dict(self) -> dict[str, int]:
        return {
            "expected": len(self.expected),
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
        }

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.expected | other.expected, self.received + other.received)


# -- servers ----------------------------------------------------------------------------------------------
class RedisServer:
    """A redis-server of our own. `durable=True` is appendonly yes + appendfsync always, so a kill -9 keeps
    every write Redis acknowledged — the configuration a bridge deployment should use."""

    def __init__(self, workdir: Path, durable: bool = True) -> None:
        exe = binary("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server")
        self.exe, self.workdir, self.durable = exe, workdir, durable
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        cmd = [
            self.exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *aof,
            "--dir",
            str(self.workdir),
        ]
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Mosquitto:
    """Mosquitto with persistence on, so queued QoS 1 messages of persistent sessions survive a restart."""

    def __init__(self, workdir: Path) -> None:
        exe = binary("mosquitto")
        if exe is None:
            raise FileNotFoundError("mosquitto")
        self.exe, self.workdir = exe, workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_queued_messages 100000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port)

    def stop(self) -> None:
        # SIGTERM: mosquitto writes its persistence file on a clean shutdown.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# -- the stack --------------------------------------------------------------------------------------------
@dataclass
class Stack:
    """One receiver and any number of bridges on one store (a Redis namespace, or one SQLite file)."""

    workdir: Path
    redis_url: str | None = None
    mqtt_url: str | None = None
    lease_s: float = 3.0
    extra_env: dict[str, str] = field(default_factory=dict)
    secret: str = field(default_factory=lambda: secrets.token_hex(8))
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    admin: str = field(default_factory=lambda: secrets.token_hex(8))
    namespace: str = field(default_factory=lambda: f"faults{secrets.token_hex(4)}")
    receiver: Proc | None = None
    bridges: list[Proc] = field(default_factory=list)
    ack_via: int = 0  # the bridge the receiver calls back with ack/resolve
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(4)])
    receiver_port: int = field(default_factory=free_port)

    def bridge_env(self, index: int) -> dict[str, str]:
        env = {
            "SOSBRIDGE_DB": str(self.workdir / "bridge.db"),
            "SOSBRIDGE_DATA_DIR": str(self.workdir / f"b{index}"),
            "SOSBRIDGE_PLATFORM_URL": f"http://127.0.0.1:{self.receiver_port}/contacts",
            "SOSBRIDGE_PLATFORM_SECRET": self.secret,
            "SOSBRIDGE_PLATFORM_TOKEN": self.token,
            "SOSBRIDGE_ADMIN_TOKEN": self.admin,
            "SOSBRIDGE_RETRY_BASE_S": "0.1",
            "SOSBRIDGE_RETRY_MAX_S": "0.5",
            "SOSBRIDGE_LEASE_S": str(self.lease_s),
            # Few deliveries in flight, so the bounds below are tight: a killed instance repeats at most
            # this many contacts, and a slow platform takes alerts / 4 rounds (the product's default is 32).
            "SOSBRIDGE_FORWARDER_WORKERS": str(FAULT_WORKERS),
            "SOSBRIDGE_MQTT_URL": self.mqtt_url or "",
            "SOSBRIDGE_MQTT_CLIENT_ID": f"sosbridge-{index}",
            "SOSBRIDGE_COAP_ENABLED": "false",
            "SOSBRIDGE_LOG_LEVEL": "WARNING",
        }
        if self.redis_url:
            env["SOSBRIDGE_REDIS_URL"] = f"{self.redis_url}?namespace={self.namespace}"
        env.update(self.extra_env)
        return env

    def start_receiver(self, mode: str = "normal", slow_s: float = 5.0) -> Proc:
        bridge_url = self.url(self.ack_via)
        if mode != "normal":
            self.receiver = _mode_receiver(self, bridge_url, mode, slow_s)
            return self.receiver
        self.receiver = start_receiver_process(
            self.receiver_port,
            self.secret,
            self.workdir / "contacts.jsonl",
            bridge_url,
            self.token,
            self.workdir / "receiver.log",
        )
        return self.receiver

    def add_bridge(self) -> Proc:
        index = len(self.bridges)
        proc = start_bridge_process(self.bridge_env(index), self.ports[index], self.workdir / f"bridge{index}.log")
        self.bridges.append(proc)
        return proc

    def restart_bridge(self, index: int) -> Proc:
        self.bridges[index].stop()
        self.bridges[index] = start_bridge_process(
            self.bridge_env(index), self.ports[index], self.workdir / f"bridge{index}.log"
        )
        return self.bridges[index]

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def register(self, n: int, prefix: str = "dev", **fields: Any) -> list[tuple[str, str]]:
        devices = []
        with httpx.Client(timeout=10) as client:
            for i in range(n):
                device_id = f"{prefix}-{i}"
                r = client.post(
                    f"{self.url(0)}/v1/devices",
                    headers={"Authorization": f"Bearer {self.admin}"},
                    json={"device_id": device_id, "person": {"language": "en-GB"}, **fields},
                )
                r.raise_for_status()
                body = r.json()
                # Anything else answering on the bridge's port is a stranger that took it (tests/support/ports.py).
                assert "token" in body, f"{self.url(0)} answered POST /v1/devices with {r.status_code} {body}"
                devices.append((device_id, str(body["token"])))
        return devices

    def received(self) -> Counter[str]:
        """Every delivery the receiver recorded (its JSONL survives a receiver restart)."""
        path = self.workdir / "contacts.jsonl"
        counts: Counter[str] = Counter()
        if path.exists():
            import json

            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    counts[json.loads(line)["idempotency_key"]] += 1
        return counts

    def close(self) -> None:
        for proc in [*self.bridges, *([self.receiver] if self.receiver else [])]:
            with contextlib.suppress(Exception):
                proc.stop()


def _mode_receiver(s: Stack, bridge_url: str, mode: str, slow_s: float) -> Proc:
    log = s.workdir / "receiver.log"
    cmd = [
        sys.executable,
        "-m",
        "tests.faults.receiver_proc",
        "--port",
        str(s.receiver_port),
        "--secret",
        s.secret,
        "--jsonl",
        str(s.workdir / "contacts.jsonl"),
        "--bridge-url",
        bridge_url,
        "--platform-token",
        s.token,
        "--mode",
        mode,
        "--slow-s",
        str(slow_s),
    ]
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{s.receiver_port}"
    wait_http(f"{url}/healthz", proc=proc)
    return Proc(proc, url, log)


@contextlib.contextmanager
def stack(workdir: Path | None = None, **kwargs: Any) -> Iterator[Stack]:
    own = workdir is None
    path = Path(tempfile.mkdtemp(prefix="sosfaults-")) if workdir is None else workdir
    s = Stack(path, **kwargs)
    try:
        yield s
    finally:
        s.close()
        if own and not os.environ.get("SOSBRIDGE_KEEP_FAULT_DIRS"):
            shutil.rmtree(path, ignore_errors=True)


# -- device side ------------------------------------------------------------------------------------------
def send_alert(urls: Callable[[], str], device: tuple[str, str], message_id: str, deadline_s: float = 60.0) -> str:
    """POST one alert the way a device must: until a 202, retrying with the same message_id (so the
    bridge's dedupe absorbs a repeat whose first answer was lost). Returns the alert id."""
    device_id, token = device
    body = {"kind": "sos", "message_id": message_id, "location": {"lat": 55.9533, "lon": -3.1883, "accuracy_m": 8}}
    deadline = time.monotonic() + deadline_s
    pause = 0.1
    with httpx.Client(timeout=5) as client:  # one client per device: a new one per try costs a TLS context
        while True:
            try:
                r = client.post(f"{urls()}/v1/alerts", json=body, headers={"Authorization": f"Bearer {token}"})
                if r.status_code == 202:
                    return str(r.json()["alert_id"])
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{device_id}: no 202 in {deadline_s} s")
            time.sleep(pause)
            pause = min(0.5, pause * 1.5)  # devices back off; 40 of them at 10 Hz starve a 2-core host


def wait_delivered(s: Stack, expected: set[str], timeout: float = 60.0, settle_s: float = 0.0) -> Tally:
    """Wait until every expected key arrived, then `settle_s` more so late duplicates are counted too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not expected <= set(s.received()):
        time.sleep(0.1)
    time.sleep(settle_s)
    return Tally(expected, s.received())


def later(delay_s: float, fn: Callable[[], object]) -> threading.Thread:
    """Run fn after delay_s on a thread (a fault that lands in the middle of the sender's stream)."""

    def run() -> None:
        time.sleep(delay_s)
        fn()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t
