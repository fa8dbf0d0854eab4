"""bridge/infra/corked.py: the writes of one loop turn leave in one send, in order."""

from __future__ import annotations

import asyncio

from bridge.infra.corked import CorkedWriter


async def test_one_turn_s_writes_leave_in_one_send_in_order() -> None:
    sent: list[bytes] = []
    writer = CorkedWriter(asyncio.get_running_loop(), sent.append)
    writer.write(b"a")
    writer.write(b"")  # nothing to send: no chunk, no extra send
    writer.write(bytearray(b"b"))
    writer.write(memoryview(b"c"))
    assert sent == [] and writer.pending_bytes == 3
    await asyncio.sleep(0)
    assert sent == [b"abc"]
    writer.write(b"d")
    await asyncio.sleep(0)
    assert sent == [b"abc", b"d"]  # the next turn's writes: a send of their own


async def test_flush_sends_now_and_drop_forgets() -> None:
    sent: list[bytes] = []
    writer = CorkedWriter(asyncio.get_running_loop(), sent.append)
    writer.write(b"head")
    writer.flush()  # before a close
    assert sent == [b"head"]
    writer.write(b"lost")
    writer.drop()  # an abort
    await asyncio.sleep(0)
    assert sent == [b"head"] and writer.pending_bytes == 0
