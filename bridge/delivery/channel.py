"""The wire between `sosbridge serve` and its delivery process: length-prefixed frames over a socketpair.

A frame is a 4-byte big-endian length and a `marshal` body (tuples of str, int, float, bool, None only:
nothing in a frame can run code). The parent sends `(req_id, route, item)` for each contact to deliver;
the child answers `(req_id, kind, reason, after_s, status)` with the sink's outcome. The first frame each
way is the hand-shake (`hello`: pickled settings and routes from the parent, over a socketpair only it and
its own child hold; `READY` from the child). Pure functions, and the protocol class both ends share;
docs/architecture.md ("Processes").
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import struct
from typing import Any

from bridge.delivery.sinks.base import Delivered, Outcome, Permanent, Retry
from bridge.infra.corked import CorkedWriter
from bridge.store.base import OutboxItem

log = logging.getLogger("sosbridge.delivery")

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a contact with its rendered body is a few kB; anything near this is a bug
READY = ("ready",)

_DELIVERED, _RETRY, _PERMANENT = 0, 1, 2


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


def item_fields(item: OutboxItem) -> tuple[Any, ...]:
    """What a sink reads from a row: no alert document, no lease bookkeeping."""
    return (item.item_id, item.alert_id, item.seq, item.msg_type, item.idempotency_key, item.payload,
            item.critical, item.attempts, item.created_at, item.route, item.body, item.body_format,
            item.fallback_sent)


def item_from(fields: tuple[Any, ...]) -> OutboxItem:
    (item_id, alert_id, seq, msg_type, key, payload, critical, attempts, created_at, route, body, body_format,
     fallback_sent) = fields
    return OutboxItem(item_id, alert_id, seq, msg_type, key, payload, critical, state="inflight",
                      attempts=attempts, created_at=created_at, route=route, body=body, body_format=body_format,
                      fallback_sent=fallback_sent)


def request(req_id: int, route: str, item: OutboxItem) -> bytes:
    return pack((req_id, route, item_fields(item)))


def answer(req_id: int, outcome: Outcome) -> bytes:
    if isinstance(outcome, Delivered):
        return pack((req_id, _DELIVERED, "", None, outcome.status))
    if isinstance(outcome, Retry):
        return pack((req_id, _RETRY, outcome.reason, outcome.after_s, 0))
    return pack((req_id, _PERMANENT, outcome.reason, None, 0))


def outcome_of(message: tuple[Any, ...]) -> tuple[int, Outcome]:
    """`(req_id, outcome)` from an answer frame's body."""
    req_id, kind, reason, after_s, status = message
    if kind == _DELIVERED:
        return req_id, Delivered(status)
    if kind == _RETRY:
        return req_id, Retry(reason, after_s)
    return req_id, Permanent(reason)


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
            log.error("bad frame on the delivery channel; closing it", extra={"peer": self.peer, "error": str(exc)})
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
