"""Harness: the reference receiver process, bridge processes, and measuring one delivery run."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import PY, Proc, free_port, latency_summary, spawn, wait_http

SECRET = "bench-secret-" + uuid.uuid4().hex  # the bridge refuses webhook secrets under 32 characters


class _Client:
    """What `measure` needs from a receiver process: count, rows (device id first, receipt time second,
    message type last), reset and a bounded wait."""

    proc: Proc
    http: httpx.Client

    def count(self) -> int:
        raise NotImplementedError

    def rows(self, since: int = 0) -> list[list[Any]]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def wait_count(self, n: int, timeout_s: float, stall_s: float = 20.0) -> int:
        """Until n records arrived, the deadline passed, or nothing new came for stall_s."""
        deadline = time.monotonic() + timeout_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            got = self.count()
            if got >= n:
                return got
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > stall_s:
                return got
            time.sleep(0.05)
        return self.count()

    def close(self) -> None:
        self.http.close()
        self.proc.stop()


class ReceiverClient(_Client):
    """The reference (validating) receiver: for the validation run only, it caps every contender."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.proc = spawn("receiver", [PY, "-m", "bench.receiver_proc", str(self.port), SECRET], workdir)
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/contacts"
        wait_http(f"{self.base}/healthz", proc=self.proc.proc)
        self.http = httpx.Client(base_url=self.base, timeout=60.0)

    def count(self) -> int:
        return int(self.http.get("/bench/stats").json()["n"])

    def stats(self) -> dict[str, Any]:
        return dict(self.http.get("/bench/stats").json())

    def rows(self, since: int = 0) -> list[list[Any]]:
        return list(self.http.get("/bench/records", params={"since": since}).json())

    def full_records(self) -> list[dict[str, Any]]:
        return list(self.http.get("/contacts").json())

    def reset(self) -> None:
        self.http.post("/bench/reset")


class RecorderClient(_Client):
    """The recording receiver (bench/recorder.py): every throughput and latency comparison uses it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.proc = spawn("recorder", [PY, "-m", "bench.recorder", str(self.port)], workdir)
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/contacts"
        wait_http(f"{self.base}/healthz", proc=self.proc.proc)
        self.http = httpx.Client(base_url=self.base, timeout=60.0)

    def count(self) -> int:
        return int(self.http.get("/stats").json()["count"])

    def stats(self) -> dict[str, Any]:
        return dict(self.http.get("/stats").json())

    def rows(self, since: int = 0) -> list[list[Any]]:
        return list(self.http.get("/records", params={"since": since}).json())

    def sample(self) -> dict[str, Any] | None:
        return self.http.get("/sample").json()

    def reset(self) -> None:
        self.http.delete("/records")


@dataclass
class Bridge:
    proc: Proc
    url: str
    ready_s: float


PASSED_THROUGH = ("SOSBRIDGE_WORKERS", "SOSBRIDGE_FORWARDER_WORKERS", "SOSBRIDGE_MQTT_SENDER_WORKERS",
                  "SOSBRIDGE_MQTT_SENDER_TURNS_PER_ROUND", "SOSBRIDGE_INTAKE_WORKERS")


def bridge_env(workdir: Path, name: str, receiver_url: str, mqtt_port: int | None, redis_url: str | None = None,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    # The scheduling knobs pass through: `SOSBRIDGE_WORKERS=1 python -m bench.run` measures one process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOSBRIDGE_") or k in PASSED_THROUGH}
    env.update({
        "SOSBRIDGE_DB": str(workdir / f"{name}.db"),
        "SOSBRIDGE_DATA_DIR": str(workdir / f"{name}-data"),
        "SOSBRIDGE_HTTP_HOST": "127.0.0.1",
        "SOSBRIDGE_PLATFORM_URL": receiver_url,
        "SOSBRIDGE_PLATFORM_SECRET": SECRET,
        "SOSBRIDGE_PLATFORM_TOKEN": "bench-platform-token",
        "SOSBRIDGE_ADMIN_TOKEN": "bench-admin-token",
        "SOSBRIDGE_MQTT_CLIENT_ID": f"sosbridge-{name}-{uuid.uuid4().hex[:6]}",
        # CoAP stays on (as in a deployment) on a port of the OS's choosing: the fixed 5683 made a bench
        # bridge exit 2 whenever another bridge on the host held it.
        "SOSBRIDGE_COAP_PORT": "0",
    })
    if mqtt_port:
        env["SOSBRIDGE_MQTT_URL"] = f"mqtt://127.0.0.1:{mqtt_port}"
    if redis_url:
        env["SOSBRIDGE_REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


def start_bridge(workdir: Path, name: str, env: dict[str, str]) -> Bridge:
    """`sosbridge serve` as a real process; ready_s is process start → first /readyz 200."""
    port = free_port()
    env = {**env, "SOSBRIDGE_HTTP_PORT": str(port)}
    t0 = time.monotonic()
    proc = spawn(f"bridge-{name}", [PY, "-m", "bridge.app.cli", "serve"], workdir, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        t_ready = wait_http(f"{url}/readyz", timeout=60, proc=proc.proc, ok=300)
    except Exception:
        proc.stop()
        raise
    return Bridge(proc, url, t_ready - t0)


@dataclass
class RunResult:
    label: str
    expected: int
    delivered: int = 0
    rate_per_s: float = 0.0
    offered_rate: float | None = None
    latency: dict[str, float] = field(default_factory=dict)
    per_key: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "per_key"}
        return d


def wait_keys(rx: _Client, keys: list[str], timeout_s: float, stall_s: float = 20.0,
              msg_type: str | None = "alert") -> int:
    """Until every key has a record of msg_type, the deadline passed, or no new key arrived for stall_s
    (reads only the rows it has not seen yet); returns how many keys arrived."""
    wanted = set(keys)
    seen: set[str] = set()
    offset = 0
    deadline = time.monotonic() + timeout_s
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        rows = rx.rows(since=offset)
        offset += len(rows)
        before = len(seen)
        for row in rows:
            if row[0] in wanted and (msg_type is None or row[-1] in (msg_type, None)):
                seen.add(row[0])
        if len(seen) >= len(wanted):
            break
        if len(seen) != before:
            last_change = time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            break
        time.sleep(0.05)
    return len(seen)


def measure(
    label: str, rx: _Client, keys: list[str], send: Callable[[], dict[str, float]], timeout_s: float,
    offered_rate: float | None = None, msg_type: str | None = "alert", lat_keys: list[str] | None = None,
    settle_s: float = 0.0, reset: bool = True,
) -> RunResult:
    """Run `send`, wait for one record per key at the receiver, and compute rate and latency (over
    `lat_keys` when given: the keys after a warm-up). `settle_s` waits that much more after the last key
    (so late duplicates are counted)."""
    if reset:
        rx.reset()
    result = RunResult(label, len(keys), offered_rate=offered_rate)
    t_start = time.time()
    sent = send()
    wait_keys(rx, keys, timeout_s, stall_s=min(20.0, max(5.0, timeout_s / 4)), msg_type=msg_type)
    if settle_s:
        time.sleep(settle_s)
    rows = rx.rows()
    wanted = set(keys)
    first_recv: dict[str, float] = {}
    for row in rows:
        device, received_at, kind = row[0], row[1], row[-1]
        if device not in wanted or (msg_type is not None and kind not in (msg_type, None)):
            continue
        result.per_key[device] = result.per_key.get(device, 0) + 1
        first_recv.setdefault(device, received_at)
    result.delivered = len(first_recv)
    result.extra["records"] = len(rows)
    if first_recv:
        t_first_send = min(sent.values()) if sent else t_start
        t_last = max(first_recv.values())
        result.elapsed_s = round(t_last - t_first_send, 3)
        result.rate_per_s = round(result.delivered / result.elapsed_s, 1) if result.elapsed_s > 0 else 0.0
        chosen = lat_keys if lat_keys is not None else list(first_recv)
        lat = [first_recv[k] - sent[k] for k in chosen if k in first_recv and k in sent]
        result.latency = latency_summary(lat)
    if result.delivered < result.expected:
        result.notes.append(f"{result.expected - result.delivered} of {result.expected} not delivered")
    return result


def stop_quietly(*procs: Proc | None) -> None:
    for p in procs:
        if p is not None:
            with contextlib.suppress(Exception):
                p.stop()
