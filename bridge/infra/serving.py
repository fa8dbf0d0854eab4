"""Run an ASGI app on loopback inside the current event loop (embedded bridge, receiver, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something listens on host:port (servers started as separate processes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} not listening after {timeout} s")


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None, ok: int = 500) -> float:
    """Poll until `url` answers below `ok` (a server started as a separate process); returns the
    monotonic time it first did. Fails fast if `proc` exits first."""
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code < ok:
                    return time.monotonic()
            time.sleep(0.01)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on `host` that the kernel will not hand to anyone else for about a minute.

    A port merely found free and closed could be handed out again by the kernel before the server binds it:
    to an outgoing connection or another bind(0), in this process or any other (CI saw a stack's HTTP server
    fail to bind so). So the port is left reserved in TIME_WAIT: a listener accepts one connection and
    closes its end first. Until TIME_WAIT ends, bind(0), connect() and binds without SO_REUSEADDR skip the
    port, while a server that sets SO_REUSEADDR (asyncio, uvicorn, aiohttp, Mosquitto, Redis, Node.js all
    do) binds it. The same technique as Yelp's ephemeral-port-reserve. Only TCP is reserved: a UDP server
    given this number (CoAP) binds a port that was free when chosen.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(1)
        address = listener.getsockname()
        with socket.create_connection(address, timeout=5):
            accepted, _ = listener.accept()
            accepted.close()  # this end closes first, so its TIME_WAIT holds the port
        return int(address[1])


@contextlib.asynccontextmanager
async def serve_app(
    app: Any, host: str, port: int, options: dict[str, Any] | None = None
) -> AsyncIterator[uvicorn.Server]:
    """`options`: further uvicorn.Config arguments (the bridge passes bridge.app.security.http_server_options)."""
    values: dict[str, Any] = {"log_level": "warning", "lifespan": "on", "access_log": False}
    values.update(options or {})
    values.update(host=host, port=port, timeout_graceful_shutdown=2)
    config = uvicorn.Config(app, **values)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"server on {host}:{port} did not start")
            await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
