"""One MQTT connection on the event loop: frames the byte stream, hands PUBLISHes over, sends PUBACKs.

Read-ahead bound: a `ReadWindow` counts messages handed to the adapter and not yet released. At its
limit the protocol stops parsing and pauses the transport (`pause_reading()`): the rest waits in the
kernel and at the broker, so memory holds at most the window plus one socket read. Reading resumes when
a quarter of the window is free. What is written in one loop turn (PUBACKs, publishes) goes out in one
socket write. Control packets go to the session (client.py); a malformed stream aborts the connection.
docs/transports/mqtt.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.infra.corked import CorkedWriter
from device_adapters.mqtt import codec

log = logging.getLogger("sosbridge.mqtt")


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    dup: bool


class ReadWindow:
    """Messages handed to the adapter and not yet released. It outlives a connection: what the adapter
    still holds after a reconnect keeps its slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.resume_at = limit - max(1, limit // 4)
        self.pending = 0
        self.reader: MqttProtocol | None = None

    def release(self) -> None:
        if self.pending > 0:
            self.pending -= 1
        reader = self.reader
        if reader is not None and reader.paused:
            reader.room()


class MqttProtocol(asyncio.Protocol):
    def __init__(self, *, v5: bool, window: ReadWindow, on_message: Callable[[Inbound], None],
                 on_control: Callable[[int, bytes], None]) -> None:
        self.v5 = v5
        self.window = window
        self.on_message = on_message
        self.on_control = on_control
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.paused = False  # reading paused because the window is full
        self.last_in = self.last_out = time.monotonic()
        self._buf = b""
        self._out = CorkedWriter(self.loop, self._send)  # written this loop turn, sent at its end
        # QoS 1 messages handed over on this connection and not yet acknowledged, by packet id.
        self.unacked: dict[int, Inbound] = {}
        self._room_soon = False

    # -- transport callbacks ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.window.reader = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.window.reader is self:
            self.window.reader = None
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_in = time.monotonic()
        self._buf = self._buf + data if self._buf else data
        self._parse()

    def eof_received(self) -> bool:
        return False  # close: the broker hung up

    # -- reading ---------------------------------------------------------------------------------------
    def _parse(self) -> bool:
        """Hand over every complete packet while the window has room. True: stopped because it is full."""
        buf, pos, size, window, full = self._buf, 0, len(self._buf), self.window, False
        try:
            while pos < size:
                frame = codec.frame_at(buf, pos)
                if frame is None:
                    break
                first, start, end = frame
                if first >> 4 == codec.PUBLISH:
                    if window.pending >= window.limit:  # control packets (CONNACK) still go through
                        full = True
                        if not self.paused and self.transport is not None:
                            self.paused = True
                            self.transport.pause_reading()
                        break
                    self._publish(first, buf[start:end])
                else:
                    self.on_control(first >> 4, buf[start:end])
                pos = end
        except codec.Malformed as exc:
            log.warning("mqtt stream malformed; reconnecting", extra={"error": str(exc)})
            self.abort()
            pos = size
        self._buf = buf[pos:] if pos < size else b""
        return full

    def _publish(self, first: int, body: bytes) -> None:
        msg = codec.decode_publish(first, body, v5=self.v5)
        if msg.qos == 2:
            raise codec.Malformed("QoS 2 on a QoS 1 subscription")
        try:
            topic = msg.topic.decode("utf-8")
        except UnicodeDecodeError:
            # Invalid UTF-8 topic: nothing can route it; acknowledge so it cannot block the session.
            if msg.qos:
                self.ack(msg.mid)
            return
        inbound = Inbound(topic, msg.payload, msg.qos, msg.retain, msg.mid, msg.dup)
        if msg.qos:
            self.unacked[msg.mid] = inbound
        self.window.pending += 1
        try:
            self.on_message(inbound)
        except Exception:
            # A bug in the receiver: the message stays unacknowledged (the broker redelivers it to the
            # next session) and its slot is freed so reading goes on.
            log.exception("mqtt message hand-over failed; not acknowledged", extra={"topic": topic})
            self.window.pending -= 1

    def room(self) -> None:
        """A slot was released while reading is paused: carry on, in the next loop turn (never inside the
        adapter's release)."""
        if not self._room_soon:
            self._room_soon = True
            self.loop.call_soon(self._carry_on)

    def _carry_on(self) -> None:
        self._room_soon = False
        transport, window = self.transport, self.window
        if not self.paused or transport is None or transport.is_closing() or window.pending >= window.limit:
            return  # a lost connection's buffer is never handed over: the broker redelivers it
        if not self._parse() and window.pending <= window.resume_at:
            self.paused = False
            self.last_in = time.monotonic()  # the keepalive's clock starts again (nothing was read)
            transport.resume_reading()

    # -- writing ---------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queued, and sent with everything else written in this loop turn in one socket write (a status
        publish and a PUBACK per alert were one send() each)."""
        self._out.write(data)

    def ack(self, mid: int) -> None:
        self.write(codec.puback(mid))

    def ack_message(self, msg: Inbound) -> None:
        """PUBACK for this very message, if it came on this connection. A copy from an earlier connection
        is not acknowledged here: its packet id may since belong to another message (the broker redelivers
        it, and the redelivered copy is acknowledged in its place)."""
        if self.unacked.get(msg.mid) is msg:
            del self.unacked[msg.mid]
            self.write(codec.puback(msg.mid))

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_out = time.monotonic()

    def _flush(self) -> None:
        self._out.flush()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def silent_for(self, now: float) -> float:
        """Seconds since the broker was last heard; 0 while reading is paused on purpose."""
        return 0.0 if self.paused else now - self.last_in
