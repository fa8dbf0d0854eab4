"""A fault-injecting TCP proxy for the fault suite: put it between the bridge and Redis, the broker or the
platform, and switch its mode while traffic flows (docs/testing/fault-suite.md).

Modes (`proxy.mode = ...`, effective at once on every open connection and on new ones):
- `pass`: forward both ways.
- `blackhole`: accept, read and discard everything, answer nothing, close nothing (a dead route, a
  firewall that drops): the peer's only clue is its own timeout.
- `delay`: forward both ways after `delay_s` per chunk (a congested or distant link).
- `reset`: every open connection and every new one is reset (RST, SO_LINGER 0): a crashed middlebox.
- `half_open`: the upstream side is closed, the client side is kept open and silent (a peer that died
  without a FIN, a NAT that forgot the flow): writes succeed locally, nothing ever answers.
- `one_way`: client to server flows, server to client is dropped (an asymmetric route): requests are
  applied, their answers never arrive.
- `one_way_reverse`: server to client flows, client to server is dropped (the other asymmetric route): the
  bridge hears its broker, but its PUBACKs, pings and publishes vanish.
It runs its own event loop on a thread, so a test can drive it from synchronous code.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

from tests.support.ports import free_port

MODES = ("pass", "blackhole", "delay", "reset", "half_open", "one_way", "one_way_reverse")
CHUNK = 65536


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", delay_s: float = 0.5) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.delay_s = delay_s
        self._mode = "pass"
        self._loop = asyncio.new_event_loop()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    # -- control (any thread) ----------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        done = threading.Event()

        def switch() -> None:
            self._mode = mode
            if mode == "reset":
                for client, upstream in list(self._pairs):
                    _reset(client)
                    if upstream is not None:
                        _reset(upstream)
            elif mode == "half_open":
                for _client, upstream in list(self._pairs):
                    if upstream is not None:
                        upstream.close()
            done.set()

        self._loop.call_soon_threadsafe(switch)
        if not done.wait(5):
            raise TimeoutError("the proxy's loop did not switch mode")

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("fault proxy did not start")
        return self

    def stop(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for client, upstream in list(self._pairs):
                client.close()
                if upstream is not None:
                    upstream.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- the loop's thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()  # until stop(): the proxy lives as long as the test's stack

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "reset":
            _reset(writer)
            return
        upstream_writer: asyncio.StreamWriter | None = None
        upstream_reader: asyncio.StreamReader | None = None
        if self._mode not in ("blackhole", "half_open"):
            try:
                upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 5)
            except (OSError, TimeoutError):
                _reset(writer)
                return
        pair = (writer, upstream_writer)
        self._pairs.add(pair)
        try:
            tasks = [asyncio.create_task(self._pump(reader, upstream_writer, upstream=True))]
            if upstream_reader is not None:
                tasks.append(asyncio.create_task(self._pump(upstream_reader, writer, upstream=False)))
            # Service loop: ends when both directions end (EOF, reset, or the proxy stopping).
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._pairs.discard(pair)
            writer.close()
            if upstream_writer is not None:
                upstream_writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, upstream: bool) -> None:
        while True:
            try:
                # A proxy's read waits for its peer; the proxy's stop() closes both ends, which ends it.
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                return
            if not data:
                if self._mode == "pass" and writer is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                return
            mode = self._mode
            if mode in ("blackhole", "half_open") or (mode == "one_way" and not upstream) or (
                mode == "one_way_reverse" and upstream
            ):
                continue  # swallowed
            if mode == "reset" or writer is None or writer.is_closing():
                return
            if mode == "delay":
                await asyncio.sleep(self.delay_s)
            try:
                writer.write(data)
                await asyncio.wait_for(writer.drain(), 30)
            except (ConnectionError, OSError, TimeoutError):
                return


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


@contextlib.contextmanager
def fault_proxy(upstream_port: int, delay_s: float = 0.5) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port, delay_s=delay_s).start()
    try:
        yield proxy
    finally:
        proxy.stop()
