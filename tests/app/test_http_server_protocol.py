"""The bridge's HTTP protocol (bridge/app/http_server.py, uvicorn's httptools parser with the request
deadline, the pending-connection cap and the head-size cap) over real loopback sockets, against a real
EmbeddedBridge answering `POST /v1/alerts` from its real store.

These are the cases where a C parser driven by callbacks differs from h11's states: pipelined requests,
a request in many small writes, a body trickled past the deadline, a Content-Length that does not match
the body, a chunked body, a head past 16 KiB, and which connections count as pending. The deadline
itself is covered end to end in tests/security/test_slow_clients.py (`sosbridge serve` under a small
descriptor limit). Every read has a deadline; no test asserts a speed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from bridge.app.http_server import RequestDeadlineProtocol
from bridge.core.model import Device
from bridge.infra.serving import serve_app
from tests.support.ports import free_port

TOKEN = "wearable-protocol-token-0123456789"
REQUEST_TIMEOUT_S = 1.5
MAX_PENDING = 3
READ_S = 10.0  # the longest any read may wait (a loaded machine), far past every deadline


@dataclass
class Bridge:
    eb: EmbeddedBridge
    port: int


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    settings = Settings(
        db=str(tmp_path / "b.db"), data_dir=str(tmp_path), http_port=free_port(), coap_enabled=False,
        http_request_timeout_s=REQUEST_TIMEOUT_S, http_max_pending=MAX_PENDING, http_keepalive_s=30,
    )
    async with EmbeddedBridge(settings) as eb:
        await eb.runtime.store.put_device(Device(device_id="pendant-1"))
        await eb.runtime.store.set_credential("pendant-1", "token", TOKEN)
        yield Bridge(eb, eb.settings.http_port)


def alert_request(body: bytes | None = None, *, message_id: str = "m-1", extra_head: bytes = b"") -> bytes:
    body = body if body is not None else json.dumps({"kind": "sos", "message_id": message_id}).encode()
    return (
        b"POST /v1/alerts HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + extra_head
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return dict(json.loads(self.body))


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One HTTP/1.1 response with a Content-Length (every answer of the bridge's JSON routes)."""
    async with asyncio.timeout(READ_S):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        body = await reader.readexactly(int(headers["content-length"]))
    return Response(int(status_line.split()[1]), headers, body)


async def closed_without_answer(reader: asyncio.StreamReader) -> bool:
    """The bridge closed the connection (EOF or reset) without sending a byte."""
    try:
        async with asyncio.timeout(READ_S):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(READ_S):
        return await asyncio.open_connection("127.0.0.1", port)


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    async with asyncio.timeout(READ_S):
        await writer.drain()


async def open_alert(bridge: Bridge) -> str | None:
    """The device's open alert, if the bridge stored one."""
    alert = await bridge.eb.runtime.store.open_alert_for_device("pendant-1")
    return alert.alert_id if alert is not None else None


async def test_pipelined_requests_are_answered_in_order(bridge: Bridge) -> None:
    reader, writer = await connect(bridge.port)
    try:
        health = b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n"
        await send(writer, alert_request(message_id="p-1") + health + alert_request(message_id="p-1"))
        first, second, third = [await read_response(reader) for _ in range(3)]
        assert (first.status, second.status, third.status) == (202, 200, 202)
        assert first.json()["outcome"] == "created"
        assert third.json()["outcome"] == "duplicate"  # the same message id, answered after the first
        assert third.json()["alert_id"] == first.json()["alert_id"]
    finally:
        writer.close()


async def test_a_request_in_many_small_writes_is_answered(bridge: Bridge) -> None:
    request = alert_request(message_id="split-1")
    reader, writer = await connect(bridge.port)
    try:
        for i in range(0, len(request), 5):
            await send(writer, request[i : i + 5])
            await asyncio.sleep(0)  # each piece its own segment, read in its own loop turn
        answer = await read_response(reader)
        assert answer.status == 202, answer.body
        assert answer.json()["outcome"] == "created"
        assert await open_alert(bridge) == answer.json()["alert_id"]
    finally:
        writer.close()


async def test_a_body_trickled_past_the_deadline_is_cut_without_an_answer(bridge: Bridge) -> None:
    body = json.dumps({"kind": "sos", "message_id": "trickle-1"}).encode()
    request = alert_request(body)
    head = request[: len(request) - len(body)]
    reader, writer = await connect(bridge.port)
    started = time.monotonic()
    try:
        await send(writer, head)
        read = asyncio.ensure_future(closed_without_answer(reader))
        for byte in body:
            if read.done():
                break
            await send(writer, bytes([byte]))
            await asyncio.wait({read}, timeout=0.2)
        assert await read  # closed, and not a byte of an answer
        # The deadline runs from the connection's start, however steadily the bytes come.
        assert time.monotonic() - started >= REQUEST_TIMEOUT_S * 0.9
        assert await open_alert(bridge) is None
    finally:
        writer.close()


async def test_a_body_shorter_than_its_content_length_is_closed_at_the_deadline(bridge: Bridge) -> None:
    request = alert_request(json.dumps({"kind": "sos"}).encode())
    reader, writer = await connect(bridge.port)
    started = time.monotonic()
    try:
        await send(writer, request[:-3])
        assert await closed_without_answer(reader)
        assert time.monotonic() - started >= REQUEST_TIMEOUT_S * 0.9
        assert await open_alert(bridge) is None
    finally:
        writer.close()


async def test_bytes_past_the_content_length_are_a_bad_next_request(bridge: Bridge) -> None:
    reader, writer = await connect(bridge.port)
    try:
        await send(writer, alert_request(message_id="long-1") + b"\x00garbage\r\n\r\n")
        first = await read_response(reader)
        assert first.status == 202 and first.json()["outcome"] == "created"
        second = await read_response(reader)
        assert second.status == 400
        assert await closed_without_answer(reader)
    finally:
        writer.close()


async def test_a_chunked_body_is_read_whole(bridge: Bridge) -> None:
    body = json.dumps({"kind": "sos", "message_id": "chunked-1", "silent": True}).encode()
    pieces = [body[:10], body[10:25], body[25:]]
    head = (b"POST /v1/alerts HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    reader, writer = await connect(bridge.port)
    try:
        await send(writer, head)
        for piece in pieces:
            await send(writer, b"%x\r\n%s\r\n" % (len(piece), piece))
            await asyncio.sleep(0.02)
        await send(writer, b"0\r\n\r\n")
        answer = await read_response(reader)
        assert answer.status == 202, answer.body
        assert await open_alert(bridge) == answer.json()["alert_id"]
    finally:
        writer.close()


async def test_a_kept_alive_connection_gets_a_fresh_deadline_per_request(bridge: Bridge) -> None:
    reader, writer = await connect(bridge.port)
    try:
        await send(writer, alert_request(message_id="keep-1"))
        assert (await read_response(reader)).status == 202
        await asyncio.sleep(REQUEST_TIMEOUT_S * 1.3)  # idle: the keep-alive timer's time, not the deadline's
        await send(writer, alert_request(message_id="keep-2"))
        assert (await read_response(reader)).status == 202
    finally:
        writer.close()


@pytest.mark.parametrize("pieces", [1, 8])
async def test_an_unfinished_head_past_16_kib_is_refused(bridge: Bridge, pieces: int) -> None:
    head = alert_request()[:60] + b"X-Padding: " + b"a" * (17 * 1024)  # no end of header, ever
    reader, writer = await connect(bridge.port)
    try:
        step = -(-len(head) // pieces)
        for i in range(0, len(head), step):
            try:
                await send(writer, head[i : i + step])
            except ConnectionError:
                break  # refused before the rest was sent
        answer = await read_response(reader)
        assert answer.status == 400
        assert await closed_without_answer(reader)
    finally:
        writer.close()


async def test_the_pending_cap_closes_the_oldest_unfinished_request_only(bridge: Bridge) -> None:
    kept_reader, kept = await connect(bridge.port)  # finished its request: never pending again while idle
    half_open: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await send(kept, alert_request(message_id="cap-1"))
        assert (await read_response(kept_reader)).status == 202
        partial = alert_request(message_id="cap-x")[:40]
        for _ in range(MAX_PENDING + 1):
            reader, writer = await connect(bridge.port)
            await send(writer, partial)
            half_open.append((reader, writer))
        started = time.monotonic()
        assert await closed_without_answer(half_open[0][0])
        assert time.monotonic() - started < REQUEST_TIMEOUT_S * 0.9  # evicted by the cap, not the deadline
        await send(kept, alert_request(message_id="cap-2"))
        assert (await read_response(kept_reader)).status == 202
    finally:
        kept.close()
        for _, writer in half_open:
            writer.close()


async def test_a_request_pipelined_behind_a_slow_answer_gets_its_deadline_after_it() -> None:
    """The bridge stops reading while it owes an answer: that time is not the next request's. A small
    ASGI app (real uvicorn, the bridge's protocol) answers `/slow` after twice the deadline."""

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        assert callable(receive) and callable(send)
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/slow":
            await asyncio.sleep(REQUEST_TIMEOUT_S * 2)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    protocol = RequestDeadlineProtocol.configured(REQUEST_TIMEOUT_S, MAX_PENDING)
    async with serve_app(app, "127.0.0.1", port, {"http": protocol, "lifespan": "off"}):
        reader, writer = await connect(port)
        try:
            second = b"POST /next HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n"
            await send(writer, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n" + second)
            assert (await read_response(reader)).status == 200  # not cut while the bridge was answering
            await send(writer, b"body")
            assert (await read_response(reader)).status == 200
            # A request pipelined behind the slow one, never finished: its deadline started with the answer.
            await send(writer, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n" + second)
            assert (await read_response(reader)).status == 200
            answered = time.monotonic()
            assert await closed_without_answer(reader)
            assert time.monotonic() - answered >= REQUEST_TIMEOUT_S * 0.9
        finally:
            writer.close()
