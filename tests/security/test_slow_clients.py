"""Issue 14 item 4: slow clients. `sosbridge serve` runs as a process with a small file-descriptor limit
(200, as a busy host would hit its own), then hundreds of half-open HTTP requests arrive on 127.0.0.1 and
a genuine SOS must still be accepted; every half-open connection must be closed by the bridge, including
one that trickles a byte at a time (the deadline covers the whole request, not the gap between bytes).
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bridge.infra.serving import wait_http
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.sockets import closed_by_peer

FD_LIMIT = 200
HALF_OPEN = 400  # twice the bridge's descriptor limit
REQUEST_TIMEOUT_S = 2.0
HEAD = b"POST /v1/alerts HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@contextlib.contextmanager
def bridge_process(tmp_path: Path) -> Iterator[tuple[str, str]]:
    port, admin = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOSBRIDGE_")}
    env.update(
        {
            "SOSBRIDGE_DB": str(tmp_path / "bridge.db"),
            "SOSBRIDGE_DATA_DIR": str(tmp_path),
            "SOSBRIDGE_HTTP_HOST": "127.0.0.1",
            "SOSBRIDGE_HTTP_PORT": str(port),
            "SOSBRIDGE_ADMIN_TOKEN": admin,
            "SOSBRIDGE_COAP_ENABLED": "false",
            "SOSBRIDGE_HTTP_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
            "SOSBRIDGE_HTTP_MAX_PENDING": "64",
        }
    )
    with open(tmp_path / "bridge.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.app.cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_limit_fds,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc=proc)
        yield url, admin
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)



def test_half_open_connections_cannot_starve_a_genuine_sos(tmp_path: Path) -> None:
    with bridge_process(tmp_path) as (url, admin):
        r = httpx.post(
            f"{url}/v1/devices", json={"device_id": "pendant-1"}, headers={"Authorization": f"Bearer {admin}"}
        )
        token = r.json()["token"]
        port = int(url.rsplit(":", 1)[1])

        # A trickling client: one header byte every 0.25 s still loses the connection at the deadline.
        trickler = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        closed_after = None
        for byte in HEAD * 4:
            try:
                trickler.send(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            if closed_by_peer(trickler, 0.25):
                closed_after = time.monotonic() - started
                break
        trickler.close()
        assert closed_after is not None and REQUEST_TIMEOUT_S * 0.8 <= closed_after <= REQUEST_TIMEOUT_S + 2

        # The flood: hundreds of requests that never finish their header.
        attackers = []
        try:
            for _ in range(HALF_OPEN):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(HEAD)
                attackers.append(s)
            t0 = time.monotonic()
            sos = httpx.post(
                f"{url}/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            sos_s = time.monotonic() - t0
            assert sos.status_code == 202, sos.text
            # Not a speed test: a starved SOS would get a slot only when a half-open connection's deadline
            # freed one, REQUEST_TIMEOUT_S after it opened; answered sooner, it did not wait for any.
            assert sos_s < REQUEST_TIMEOUT_S
            print(f"trickler closed after {closed_after:.2f} s; SOS under {HALF_OPEN} half-open: {sos_s * 1000:.0f} ms")
            # Every half-open connection is closed by the bridge (the oldest at once, the rest at the deadline).
            deadline = time.monotonic() + REQUEST_TIMEOUT_S + 5
            still_open = [s for s in attackers if not closed_by_peer(s, max(0.01, deadline - time.monotonic()))]
            assert still_open == []
            ready = httpx.get(f"{url}/healthz", timeout=5)
            assert ready.status_code == 200
            # It never ran out of descriptors (asyncio then stops accepting for a second, and logs each try).
            assert "out of system resource" not in (tmp_path / "bridge.log").read_text()
        finally:
            for s in attackers:
                s.close()
