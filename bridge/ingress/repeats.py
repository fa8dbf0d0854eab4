"""Byte-level repeats: a frame seen again, recognised by a digest of where it came from and its bytes.

A repeat of a frame already stored is answered at once (no identify, no decode, no store); a repeat of a
frame still in flight waits for its original and is answered with it, after the commit — never before.
Only frames the ingress marked `repeatable` (stored, and every event carried a message id) are
remembered: a press without an id is a new press each time, even byte for byte. Memory is bounded (an
LRU of digests); what it forgets, the store's dedupe keys still catch. See docs/limits.md.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Generic, TypeVar

from cachetools import LRUCache

V = TypeVar("V")

REMEMBERED = 50_000  # digests of stored frames kept (16 bytes each plus the value)


def digest(channel: str, payload: bytes) -> bytes:
    """16 bytes standing for (channel, payload); `channel` is whatever names the sender (a topic). Pure."""
    name = channel.encode("utf-8", "surrogateescape")
    h = hashlib.blake2b(len(name).to_bytes(4, "big"), digest_size=16)  # the length keeps the two apart
    h.update(name)
    h.update(payload)
    return h.digest()


class RepeatCache(Generic[V]):
    """Stored frames (digest → the answer remembered for them) and frames in flight (digest → a future
    resolved when the original is answered)."""

    def __init__(self, maxsize: int = REMEMBERED) -> None:
        self._stored: LRUCache[bytes, V] = LRUCache(maxsize)
        self._inflight: dict[bytes, asyncio.Future[V | None]] = {}

    def __len__(self) -> int:
        return len(self._stored)

    def stored(self, key: bytes) -> V | None:
        """The answer remembered for a stored frame with this digest, or None."""
        return self._stored.get(key)

    def remember(self, key: bytes, value: V) -> None:
        self._stored[key] = value

    def in_flight(self, key: bytes) -> asyncio.Future[V | None] | None:
        """The original's future if a frame with this digest is being handled now."""
        return self._inflight.get(key)

    def begin(self, key: bytes) -> None:
        """The frame with this digest is now in flight (call only when `in_flight(key)` is None)."""
        self._inflight[key] = asyncio.get_running_loop().create_future()

    def finish(self, key: bytes, value: V | None) -> None:
        """The original was answered: remember `value` if not None (it was stored and is repeatable), and
        wake the repeats waiting on it (None: they must be handled on their own)."""
        if value is not None:
            self._stored[key] = value
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)
