"""Writes made in one turn of the event loop go out together, in one write at the end of the turn.

A protocol that answers several frames read at once (PUBACKs and status publishes, HTTP heads and bodies,
delivery requests and outcomes) would otherwise make one system call, and wake its peer once, per
answer. `CorkedWriter(loop, send)` collects the chunks and calls `send(joined)` once per turn; `flush()`
sends at once (before a close), `drop()` forgets what waits (an abort). Issue 27; used by the HTTP server,
the MQTT client and the delivery channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CorkedWriter:
    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[bytes], None]) -> None:
        self._loop = loop
        self._send = send
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self._send(data)

    def drop(self) -> None:
        self._pending.clear()

    @property
    def pending_bytes(self) -> int:
        return sum(len(p) for p in self._pending)
