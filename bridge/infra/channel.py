"""The wire between `sosbridge serve` and the processes it starts: length-prefixed frames over a socketpair.

A frame is a 4-byte big-endian length and a `marshal` body (tuples, lists and dicts of str, bytes, int,
float, bool and None only: nothing in a frame can run code). The first frame each way is the hand-shake
(the parent's `hello`, then `READY` from the child). `FramedProtocol` is the end both sides share: whole
frames in, frames out once per loop turn. What the frames carry is each channel's own: delivery
(bridge/delivery/channel.py) and intake (bridge/ingress/wire.py). See docs/architecture.md ("Processes").
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import struct
from typing import Any

from bridge.infra.corked import CorkedWriter

log = logging.getLogger("sosbridge.processes")

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a contact or a backlog of frames is kB; anything near this is a bug
READY = ("ready",)

class FrameError(ValueError):
    """The other side sent something that is not a frame of this protocol."""


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def pack(value: Any) -> bytes:
    return frame(marshal.dumps(value))


def split_frames(buffer: bytearray) -> list[bytes]:
    """Take every whole frame off the front of `buffer` (what is left is the start of the next one)."""
    frames: list[bytes] = []
    start = 0
    size = len(buffer)
    while size - start >= HEADER.size:
        (length,) = HEADER.unpack_from(buffer, start)
        if length > MAX_FRAME:
            raise FrameError(f"frame of {length} bytes")
        end = start + HEADER.size + length
        if end > size:
            break
        frames.append(bytes(buffer[start + HEADER.size:end]))
        start = end
    del buffer[:start]
    return frames


def unpack(body: bytes) -> Any:
    try:
        return marshal.loads(body)
    except (EOFError, ValueError, TypeError) as exc:
        raise FrameError(str(exc)) from exc


class FramedProtocol(asyncio.Protocol):
    """One end of the channel: whole frames in (`frame_received`), frames out, one write per loop turn.

    A frame the subclass cannot read (FrameError, ValueError, TypeError) closes the channel: the other
    side is then restarted (the child) or gone (the parent), never half-understood.
    """

    peer = "the other process"

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out = CorkedWriter(asyncio.get_running_loop(), self._send)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def frame_received(self, body: bytes) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            for body in split_frames(self._buffer):
                self.frame_received(body)
        except (FrameError, ValueError, TypeError) as exc:
            log.error("bad frame on a process channel; closing it", extra={"peer": self.peer, "error": str(exc)})
            self.close()

    def send_raw(self, data: bytes) -> None:
        """Queue a frame; the frames of one loop turn go out in one write (one system call, one wake-up)."""
        self._out.write(data)

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ParentEnd(FramedProtocol):
    """The parent's end of a child's channel: ready once the child's first frame is READY; `lost` is set
    when the socket closes. After the hand-shake each frame goes to `message_received`, unpacked."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.ready_event = asyncio.Event()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def frame_received(self, body: bytes) -> None:
        message = unpack(body)
        if self.ready:
            self.message_received(message)
            return
        if tuple(message) != READY:
            raise FrameError(f"expected the hand-shake, got {message!r:.80}")
        self.ready = True
        self.ready_event.set()
        self.became_ready()

    def message_received(self, message: Any) -> None:
        raise NotImplementedError

    def became_ready(self) -> None:
        """The child said READY: requests may go to it from now on."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.ready = False
        self.channel_lost()
        if not self.lost.done():
            self.lost.set_result(None)

    def channel_lost(self) -> None:
        """The socket closed: answer whatever still waits on this child."""
