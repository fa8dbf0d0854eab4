"""Graceful stop of a real `sosbridge serve` (docs/operations/stopping.md): SIGTERM with an event-stream
client, a watch attached and alerts in flight ends within the bound; every alert acknowledged is stored."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bridge.app.config import load_settings
from bridge.app.stopping import WATCHDOG_EXIT_CODE
from bridge.infra.serving import wait_port
from tests.app.test_e2e_processes import bridge_env, register
from tests.support.ports import free_port
from tests.support.processes import start_bridge_process, start_receiver_process

STOP_BOUND_S = 10.0  # SOSBRIDGE_STOP_TIMEOUT_S's default, the documented bound


def read_until(sock: socket.socket, marker: bytes, timeout: float) -> bytes:
    """Bytes from `sock` until `marker` has been read, or EOF; each recv has a deadline."""
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no EOF within {timeout} s; got {data[-200:]!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


@pytest.mark.timeout(60)
def test_sigterm_ends_streams_with_retry_hint_and_exits_within_the_bound(tmp_path: Path) -> None:
    secret, token, admin = secrets.token_hex(12), secrets.token_hex(12), secrets.token_hex(12)
    bport, rport, wport = free_port(), free_port(), free_port()
    receiver = start_receiver_process(
        rport, secret, tmp_path / "contacts.jsonl", f"http://127.0.0.1:{bport}", token, tmp_path / "rx.log"
    )
    env = bridge_env(tmp_path, rport, secret, token, admin) | {"SOSBRIDGE_WATCH_PORT": str(wport)}
    bridge = start_bridge_process(env, bport, tmp_path / "bridge.log")
    try:
        device_token = register(bridge, admin, "watch-stop")
        auth = {"Authorization": f"Bearer {device_token}"}
        r = httpx.post(f"{bridge.url}/v1/alerts", json={"kind": "fall", "message_id": "stop-0"}, headers=auth,
                       timeout=10)
        assert r.status_code == 202, r.text
        alert_id = r.json()["alert_id"]

        # An app following its alert over server-sent events, and a 4G watch attached over TCP.
        sse = socket.create_connection(("127.0.0.1", bport), timeout=5)
        sse.sendall(f"GET /v1/alerts/{alert_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    f"{device_token}\r\n\r\n".encode())
        assert b"event: status" in read_until(sse, b"event: status", 10)
        wait_port(wport)
        watch = socket.create_connection(("127.0.0.1", wport), timeout=5)

        # A flood in flight while the signal arrives: every 202 must be a stored alert.
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop_flood = threading.Event()

        def post(n: int) -> None:
            with httpx.Client(timeout=5) as client:
                i = 0
                while not stop_flood.is_set():
                    i += 1
                    try:
                        resp = client.post(f"{bridge.url}/v1/alerts", headers=auth,
                                           json={"kind": "panic", "message_id": f"stop-{n}-{i}"})
                    except httpx.HTTPError:
                        return  # refused or cut: not acknowledged, the device would retry
                    if resp.status_code == 202:
                        with lock:
                            acknowledged.append(resp.json()["alert_id"])

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(post, n) for n in range(4)]
            deadline = time.monotonic() + 15
            while len(acknowledged) < 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            t0 = time.monotonic()
            bridge.proc.send_signal(signal.SIGTERM)
            tail = read_to_eof(sse, STOP_BOUND_S)
            streams_closed_s = time.monotonic() - t0
            watch_tail = read_to_eof(watch, STOP_BOUND_S)
            code = bridge.proc.wait(STOP_BOUND_S + 5)
            exited_s = time.monotonic() - t0
            stop_flood.set()
            for f in futures:
                f.result(timeout=10)

        assert b"retry: 3000\n" in tail and b"event: stopping" in tail, tail[-300:]
        assert watch_tail == b""
        # The graceful path finished (the watchdog's exit code is 70); uvicorn re-raises the SIGTERM.
        assert code in (0, -signal.SIGTERM), code
        assert code != WATCHDOG_EXIT_CODE
        assert streams_closed_s < STOP_BOUND_S and exited_s < STOP_BOUND_S + 2, (streams_closed_s, exited_s)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", bport), timeout=2).close()

        # Nothing acknowledged was lost: every 202 is a stored alert.
        assert len(acknowledged) >= 20
        settings = load_settings(db=str(tmp_path / "bridge.db"), data_dir=str(tmp_path))

        async def stored() -> list[str]:
            from bridge.store import make_store

            store = make_store(settings)
            await store.open()
            try:
                return [a for a in acknowledged if await store.get_alert(a) is None]
            finally:
                await store.close()

        assert asyncio.run(stored()) == []
        log = bridge.log.read_text()
        assert "stopping" in log and "Traceback" not in log, log[-2000:]
    finally:
        bridge.stop()
        receiver.stop()


async def test_closing_the_bus_tells_stream_subscribers_once_even_late_or_full() -> None:
    from bridge.core.events import STOPPING, StatusBus, StatusEvent
    from bridge.core.model import AlertState

    bus = StatusBus(queue_size=2)
    async with bus.subscribe(until_stop=True) as stream, bus.subscribe() as status_topic:
        for n in range(3):  # the stream's queue is full of echoes
            bus.publish(StatusEvent(f"a{n}", "d", "t", AlertState.forwarded, "forwarded"))
        bus.close()
        events = [stream.get_nowait() for _ in range(stream.qsize())]
        assert events[-1].event == STOPPING and [e.event for e in events].count(STOPPING) == 1
        assert all(status_topic.get_nowait().event != STOPPING for _ in range(status_topic.qsize()))
        async with bus.subscribe(until_stop=True) as late:
            assert (await asyncio.wait_for(late.get(), 1)).event == STOPPING
