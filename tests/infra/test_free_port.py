"""`bridge.infra.serving.free_port`: the port stays reserved until its server binds it (docs/testing/deadlines.md)."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from bridge.infra.serving import free_port


def test_nobody_else_is_handed_the_port_meanwhile() -> None:
    port = free_port()
    with socket.socket() as plain, pytest.raises(OSError) as refused:
        plain.bind(("127.0.0.1", port))  # what bind(0) and connect() also respect
    assert refused.value.errno == errno.EADDRINUSE
    handed_out = set()
    for _ in range(2000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            handed_out.add(s.getsockname()[1])
    assert port not in handed_out


async def test_a_server_binds_the_reserved_port() -> None:
    port = free_port()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)  # asyncio sets SO_REUSEADDR
    async with server:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b"ok"
        writer.close()
