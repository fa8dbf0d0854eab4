"""Shared fixtures: real servers on loopback (bridge, receiver, mosquitto, redis), no mocks of our code."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device, Person
from bridge.infra.serving import free_port, wait_http, wait_port
from simulator.platform.receiver import EmbeddedReceiver

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


# -- the per-test deadline (pytest-timeout; docs/testing/deadlines.md) ----------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> Iterator[None]:
    """After pytest-timeout arms its SIGALRM handler, wrap it: a hung asyncio test sits in the event loop's
    select(), so the thread stacks alone show nothing; each task's await chain shows which await hangs."""
    yield
    previous = signal.getsignal(signal.SIGALRM)
    if not callable(previous):
        return

    def print_tasks_then_fail(signum: int, frame: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            tasks = asyncio.all_tasks(loop)
            print(f"\n+++ {len(tasks)} asyncio tasks at the timeout of {item.nodeid} +++", file=sys.stderr)
            for task in tasks:
                task.print_stack(limit=12, file=sys.stderr)
        previous(signum, frame)

    signal.signal(signal.SIGALRM, print_tasks_then_fail)


def need_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed; run ./scripts/test, which installs it")
    return path


# -- bridge + receiver in-process ------------------------------------------------------------------------
@dataclass
class BridgeEnv:
    bridge: EmbeddedBridge
    receiver: EmbeddedReceiver
    settings: Settings
    secret: str
    platform_token: str

    @property
    def url(self) -> str:
        return self.bridge.url

    @property
    def store(self) -> Any:
        return self.bridge.runtime.store

    async def add_device(self, device_id: str, token: str | None = None, **fields: Any) -> str:
        token = token or secrets.token_urlsafe(24)
        fields.setdefault("person", Person(name=f"Person {device_id}", language="en-GB"))
        await self.store.put_device(Device(device_id=device_id, **fields))
        await self.store.set_credential(device_id, "token", token)
        return token


def bridge_settings(tmp_path: Path, receiver_url: str, secret: str, platform_token: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db": str(tmp_path / "bridge.db"),
        "data_dir": str(tmp_path),
        "http_port": free_port(),
        "platform_url": receiver_url,
        "platform_secret": secret,
        "platform_token": platform_token,
        "admin_token": "admin-" + secrets.token_hex(8),
        "retry_base_s": 0.05,
        "retry_max_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_bridge(tmp_path: Path, auto_ack_s: float | None = 0.05, **overrides: Any) -> AsyncIterator[BridgeEnv]:
    """An embedded bridge delivering to an embedded reference receiver that auto-acknowledges."""
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    async with EmbeddedReceiver(
        secret=secret, jsonl_path=tmp_path / "contacts.jsonl", platform_token=token, auto_ack_s=auto_ack_s
    ) as rx:
        settings = bridge_settings(tmp_path, rx.url, secret, token, **overrides)
        async with EmbeddedBridge(settings) as eb:
            rx.receiver.bridge_url = eb.url
            yield BridgeEnv(eb, rx, settings, secret, token)


@pytest.fixture
async def bridge_env(tmp_path: Path) -> AsyncIterator[BridgeEnv]:
    async with running_bridge(tmp_path) as env:
        yield env


# -- processes -------------------------------------------------------------------------------------------
@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


def sosbridge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bridge.app.cli", *args]


def start_bridge_process(env: dict[str, str], port: int, log: Path) -> Proc:
    full_env = {**os.environ, **env, "SOSBRIDGE_HTTP_PORT": str(port), "SOSBRIDGE_HTTP_HOST": "127.0.0.1"}
    fh = open(log, "ab")
    proc = subprocess.Popen(sosbridge_cmd("serve"), env=full_env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc=proc)
    return Proc(proc, url, log)


def start_receiver_process(port: int, secret: str, jsonl: Path, bridge_url: str, token: str, log: Path) -> Proc:
    fh = open(log, "ab")
    cmd = sosbridge_cmd(
        "receiver",
        "--port",
        str(port),
        "--secret",
        secret,
        "--jsonl",
        str(jsonl),
        "--bridge-url",
        bridge_url,
        "--platform-token",
        token,
        "--ack-after",
        "0.05",
    )
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc=proc)
    return Proc(proc, url, log)


# -- real brokers and databases ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mosquitto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Mosquitto: the one CI started (SOSBRIDGE_TEST_MQTT_URL) or our own on a free port."""
    if os.environ.get("SOSBRIDGE_TEST_MQTT_URL"):
        yield os.environ["SOSBRIDGE_TEST_MQTT_URL"]
        return
    binary = need_binary("mosquitto")
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server: the one CI started (SOSBRIDGE_TEST_REDIS_URL) or our own on a free port."""
    if os.environ.get("SOSBRIDGE_TEST_REDIS_URL"):
        yield os.environ["SOSBRIDGE_TEST_REDIS_URL"]
        return
    binary = need_binary("redis-server")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
