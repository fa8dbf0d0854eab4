"""HTTP wearables for the bench: `POST /v1/alerts` from many devices over N kept-alive connections.

A plain asyncio HTTP/1.1 client (requests written as bytes, answers read by Content-Length): the load
generator shares the bridge's two cores, so it must cost far less per request than the bridge does
(httpx costs about as much as the bridge's whole HTTP path). Every request has a deadline; a broken
connection is reopened and the request counted with status 0.

`http_send` returns the wall-clock send time per device (time.time(), the receiver's clock, for the
delivery latency), the count per status, and each answer's latency (request written → answer read).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.seed import token_for

REQUEST_TIMEOUT_S = 30.0


def wearable_body(device_id: str) -> dict[str, Any]:
    return {
        "kind": "sos",
        "message_id": f"h-{device_id}",
        "location": {"lat": 51.5007, "lon": -0.1246, "accuracy_m": 12},
        "attributes": {"battery": 80},
    }


def alert_request(host: str, device_id: str) -> bytes:
    body = json.dumps(wearable_body(device_id)).encode()
    head = (f"POST /v1/alerts HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token_for(device_id)}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


@dataclass
class HttpRun:
    sent: dict[str, float] = field(default_factory=dict)  # device id -> time.time() the request was written
    statuses: dict[int, int] = field(default_factory=dict)
    answer_ms: list[float] = field(default_factory=list)  # written -> answer read, 2xx only
    elapsed_s: float = 0.0  # set by the caller: first request written -> last answer read


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _worker(host: str, port: int, jobs: Iterator[str], run: HttpRun, stop_at: float) -> None:
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        for device_id in jobs:
            if time.monotonic() > stop_at:
                return
            request = alert_request(f"{host}:{port}", device_id)
            status = 0
            t0 = time.monotonic()
            run.sent[device_id] = time.time()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(host, port), REQUEST_TIMEOUT_S)
                status = await asyncio.wait_for(_exchange(*conn, request), REQUEST_TIMEOUT_S)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                if conn is not None:
                    conn[1].close()
                conn = None
            if 200 <= status < 300:
                run.answer_ms.append(1000 * (time.monotonic() - t0))
            run.statuses[status] = run.statuses.get(status, 0) + 1
    finally:
        if conn is not None:
            conn[1].close()


async def _http_send(bridge_url: str, ids: Sequence[str], concurrency: int, deadline_s: float) -> HttpRun:
    url = urlsplit(bridge_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    run = HttpRun()
    jobs = iter(ids)  # shared: each worker takes the next device when its previous answer is in
    stop_at = time.monotonic() + deadline_s
    await asyncio.gather(*(_worker(host, port, jobs, run, stop_at) for _ in range(concurrency)))
    return run


def http_send(bridge_url: str, ids: Sequence[str], concurrency: int = 16, deadline_s: float = 120.0) -> HttpRun:
    """One alert per device id, `concurrency` requests in flight (one per connection)."""
    return asyncio.run(_http_send(bridge_url, ids, concurrency, deadline_s))
