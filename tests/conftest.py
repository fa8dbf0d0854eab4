"""Shared fixtures: real servers on loopback (bridge, receiver, mosquitto, redis), no mocks of our code."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.infra.serving import wait_port
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.paths import need_binary
from tests.support.ports import free_port
from tests.support.scheduling import file_or_group_scheduler, slow_first
from tests.support.workers import isolate_home, redis_url_for_worker, worker_id


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker: a HOME of its own (tests/support/workers.py)."""
    isolate_home()


# -- parallel runs (tests/support/scheduling.py) ---------------------------------------------------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow_first(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return file_or_group_scheduler(config, log) if config.getvalue("dist") == "loadgroup" else None


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


# -- bridge + receiver in-process ------------------------------------------------------------------------


@pytest.fixture
async def bridge_env(tmp_path: Path) -> AsyncIterator[BridgeEnv]:
    async with running_bridge(tmp_path) as env:
        yield env


# -- processes -------------------------------------------------------------------------------------------


# -- real brokers and databases ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mosquitto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Mosquitto: the one CI started (SOSBRIDGE_TEST_MQTT_URL) or our own on a free port. Each
    pytest-xdist worker starts its own: devices' topics (hermes/..., owntracks/...) and retained messages
    cannot be kept apart on one broker while two tests run at once."""
    if os.environ.get("SOSBRIDGE_TEST_MQTT_URL") and worker_id() is None:
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
    """A real redis-server: the one CI started (SOSBRIDGE_TEST_REDIS_URL) or our own on a free port; in a
    pytest-xdist worker, a database number of that worker's own on it."""
    if os.environ.get("SOSBRIDGE_TEST_REDIS_URL"):
        yield redis_url_for_worker(os.environ["SOSBRIDGE_TEST_REDIS_URL"])
        return
    from simulator.redis_server import throwaway_redis

    need_binary("redis-server")
    with throwaway_redis(tmp_path_factory.mktemp("redis"), durable=False) as url:
        yield redis_url_for_worker(url)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    """A Mosquitto of this test's own (tests/faults/harness.py: persistent sessions, a deep queue), for
    tests that restart or flood it, or that run `sosbridge serve` processes against it."""
    from tests.faults.harness import Mosquitto

    need_binary("mosquitto")
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A durable redis-server of this test's own (tests/faults/harness.py), for `sosbridge serve` processes."""
    from tests.faults.harness import RedisServer

    need_binary("redis-server")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
