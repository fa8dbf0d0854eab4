"""A serial port that comes back: open, run a session, and on any I/O error close and retry.

USB serial adapters vanish when unplugged and reappear (often under a stable /dev/serial/by-id/ symlink);
pty pairs in tests behave the same when the master side closes. Reads run in a worker thread so the event
loop never blocks on the tty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import serial

from bridge.infra.aio import STOP_TIMEOUT_S

log = logging.getLogger("sosbridge.serial")


class LinkLost(ConnectionError):
    pass


class Connection:
    """One open session on the port: chunked/line reads and writes."""

    def __init__(self, ser: serial.Serial) -> None:
        self._ser = ser
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._buffer = b""
        self._closed = False
        self._pump_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._pump_task = asyncio.create_task(self._pump())

    def _read_blocking(self) -> bytes:
        # Block for the first byte (bounded by the port timeout), then take whatever else is waiting.
        data = self._ser.read(1)
        if data:
            waiting = self._ser.in_waiting
            if waiting:
                data += self._ser.read(waiting)
        return bytes(data)

    async def _pump(self) -> None:
        try:
            while not self._closed:
                data = await asyncio.to_thread(self._read_blocking)
                if data:
                    self._queue.put_nowait(data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # pyserial reports a vanished tty as SerialException (EIO) or, mid-close, odd TypeErrors.
            if not self._closed:
                log.info("serial port lost", extra={"port": self._ser.port, "error": str(exc)[:200]})
        finally:
            self._queue.put_nowait(None)

    async def read(self) -> bytes:
        if self._buffer:
            data, self._buffer = self._buffer, b""
            return data
        data = await self._queue.get()  # the session's wait for the device: the pump's None ends it
        if data is None:
            self._queue.put_nowait(None)  # every later read sees the loss too
            raise LinkLost(self._ser.port)
        return data

    async def readline(self) -> bytes:
        """One line without its terminator; CR, LF and CRLF all end a line, blank lines are skipped."""
        while True:
            idx = min((i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0), default=-1)
            if idx >= 0:
                line, self._buffer = self._buffer[:idx], self._buffer[idx + 1 :]
                if line.strip():
                    return line.strip()
                continue
            if len(self._buffer) > 4096:
                self._buffer = b""  # no line ending in 4 KiB: noise, drop it
            data = await self._queue.get()  # the session's wait for the device: the pump's None ends it
            if data is None:
                self._queue.put_nowait(None)
                raise LinkLost(self._ser.port)
            self._buffer += data

    def unread(self, data: bytes) -> None:
        self._buffer = data + self._buffer

    async def write(self, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._ser.write, data)
        except (serial.SerialException, OSError) as exc:
            raise LinkLost(str(exc)) from exc

    async def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._ser.cancel_read()
        if self._pump_task is not None:
            # cancel_read() ends the blocking read, so the pump ends on its own; bounded all the same.
            await asyncio.wait({self._pump_task}, timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            self._ser.close()


Session = Callable[[Connection], Awaitable[None]]


class SerialLink:
    def __init__(self, path: str, baud: int, *, retry_s: float = 0.2, max_retry_s: float = 5.0) -> None:
        self.path = path
        self.baud = baud
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.connections = 0  # how many times the port was opened (a test sees the replug)
        self.connected = asyncio.Event()
        self._stopping = False

    def _open(self) -> serial.Serial:
        return serial.Serial(self.path, self.baud, timeout=0.5, write_timeout=2.0, exclusive=True)

    async def run(self, session: Session) -> None:
        delay = self.retry_s
        while not self._stopping:
            try:
                ser = await asyncio.to_thread(self._open)
            except (serial.SerialException, OSError, ValueError) as exc:
                log.debug("serial port not available", extra={"port": self.path, "error": str(exc)[:200]})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_s)
                continue
            delay = self.retry_s
            self.connections += 1
            log.info("serial port open", extra={"port": self.path, "connections": self.connections})
            conn = Connection(ser)
            conn.start()
            self.connected.set()
            try:
                await session(conn)
            except LinkLost:
                pass
            except (serial.SerialException, OSError) as exc:
                log.info("serial session ended", extra={"port": self.path, "error": str(exc)[:200]})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A store outage or a bug must never end the port's task for good: whatever was not
                # stored was not acknowledged, and the next session reads it again.
                log.error("serial session failed; reopening", extra={"port": self.path, "error": repr(exc)[:200]},
                          exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_s)
            finally:
                self.connected.clear()
                await conn.close()
            if not self._stopping:
                await asyncio.sleep(self.retry_s)

    def stop(self) -> None:
        self._stopping = True
