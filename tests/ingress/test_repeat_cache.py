"""bridge/ingress/repeats.py: stored frames answered from memory, repeats in flight woken by their original."""

from __future__ import annotations

import asyncio

from bridge.ingress.repeats import RepeatCache, digest


def test_digest_names_the_channel_and_the_bytes() -> None:
    a = digest("sosbridge/t/d1/alert", b'{"kind":"sos"}')
    assert a == digest("sosbridge/t/d1/alert", b'{"kind":"sos"}') and len(a) == 16
    assert a != digest("sosbridge/t/d2/alert", b'{"kind":"sos"}')
    assert a != digest("sosbridge/t/d1/alert", b'{"kind":"sos" }')
    assert digest("a", b"b\0c") != digest("a\0b", b"c")  # the separator keeps channel and payload apart


def test_memory_is_bounded_oldest_first() -> None:
    cache: RepeatCache[int] = RepeatCache(maxsize=3)
    for i in range(5):
        cache.remember(bytes([i]), i)
    assert len(cache) == 3 and cache.stored(bytes([0])) is None and cache.stored(bytes([4])) == 4


async def test_a_repeat_in_flight_hears_its_original_only_when_it_is_answered() -> None:
    cache: RepeatCache[bool] = RepeatCache()
    key = digest("t", b"p")
    cache.begin(key)
    waiting = cache.in_flight(key)
    assert waiting is not None and not waiting.done()
    cache.finish(key, True)
    assert await asyncio.wait_for(waiting, 1) is True
    assert cache.in_flight(key) is None and cache.stored(key) is True


async def test_an_original_not_stored_leaves_its_repeats_to_be_handled_alone() -> None:
    cache: RepeatCache[bool] = RepeatCache()
    key = digest("t", b"p")
    cache.begin(key)
    waiting = cache.in_flight(key)
    assert waiting is not None
    cache.finish(key, None)
    assert await asyncio.wait_for(waiting, 1) is None
    assert cache.stored(key) is None
