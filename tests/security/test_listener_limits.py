"""Issue 23 item 5: every TCP listener has a per-source connection cap and a first-frame deadline, as
HTTP has (bridge/infra/listeners.py). One idle host opening connections used to lock every watch and
every TCP alarm panel out: only global caps (10,000 / 4,096) and a 900 s idle time stood in its way.

Real listeners on loopback; the "other host" is a second loopback address (127.0.0.2), which Linux
routes to the same listener with its own source address.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.core.model import Device, Person
from simulator.devices.dc09 import VirtualPanel
from simulator.devices.watch import VirtualWatch
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.ports import free_port
from tests.support.sockets import closed_by_peer

PER_SOURCE = 4


@contextlib.asynccontextmanager
async def bridge(tmp_path: Path, **settings: object) -> AsyncIterator[tuple[BridgeEnv, int, int]]:
    watch_port, dc09_port = free_port(), free_port()
    async with running_bridge(tmp_path, watch_port=watch_port, dc09_port=dc09_port, watch_idle_s=60,
                              **settings) as env:
        yield env, watch_port, dc09_port


@contextlib.contextmanager
def idle_connections(port: int, n: int, source: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()



def rejected(env: BridgeEnv, transport: str, reason: str) -> float:
    return float(env.bridge.runtime.metrics.rejected_count(transport, reason))


@pytest.mark.parametrize("listener", ["watch", "dc09"])
async def test_one_source_cannot_take_every_connection(tmp_path: Path, listener: str) -> None:
    async with bridge(tmp_path, listener_per_source=PER_SOURCE) as (env, watch_port, dc09_port):
        port = watch_port if listener == "watch" else dc09_port
        await env.store.put_device(Device(device_id="w-1", profile_id="watch-3g-protocol",
                                          identifiers={"watch": "1111111111"}, person=Person(name="W")))
        await env.store.put_device(Device(device_id="p-1", profile_id="dc09-alarm-panel",
                                          identifiers={"dc09": "1234"}, person=Person(name="P")))
        with idle_connections(port, PER_SOURCE + 3) as socks:
            late = [await asyncio.to_thread(closed_by_peer, s, 3.0) for s in socks[PER_SOURCE:]]
            assert late == [True] * 3  # past the cap: closed at once
            assert rejected(env, listener, "too_many_from_source") == 3
            # Another host still gets in while the first holds its share.
            if listener == "watch":
                other = VirtualWatch("127.0.0.1", port, "1111111111")
                other.reader, other.writer = await asyncio.open_connection("127.0.0.1", port,
                                                                           local_addr=("127.0.0.2", 0))
                assert await other.link() is not None
                await other.close()
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
                panel = VirtualPanel("127.0.0.1", port, "1234")
                writer.write(panel.sia("BA"))
                await writer.drain()
                answer = await asyncio.wait_for(reader.readuntil(b"\r"), 5)
                assert panel.read_answer(answer).token == "ACK"
                writer.close()


@pytest.mark.parametrize("listener", ["watch", "dc09"])
async def test_a_connection_that_sends_nothing_is_closed_at_the_first_frame_deadline(
        tmp_path: Path, listener: str) -> None:
    async with bridge(tmp_path, listener_first_frame_s=1.0) as (env, watch_port, dc09_port):
        port = watch_port if listener == "watch" else dc09_port
        with idle_connections(port, 1) as (sock,):
            assert await asyncio.to_thread(closed_by_peer, sock, 4.0)
        assert rejected(env, listener, "no_first_frame") == 1
