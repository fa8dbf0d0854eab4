"""`DeviceCache.by_token`: a device's bearer token answered from the registry cache (issue 27 item 6),
on a real SQLite store. A found device is reused for the cache's lifetime or until `forget`; a token that
matches nothing is never remembered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.core.model import Device
from bridge.ingress.binding import DeviceCache
from bridge.store.sqlite import SqliteStore

TOKEN = "token-of-watch-1-0123456789abcdef"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "bridge.db"))
    await asyncio.wait_for(s.open(), 10)
    await s.put_device(Device(device_id="watch-1"))
    yield s
    await s.close()


async def revoke(store: SqliteStore) -> None:
    await store._run(lambda c: c.execute("DELETE FROM credentials WHERE device_id = 'watch-1'"))


async def test_a_found_token_is_reused_until_forgotten(store: SqliteStore) -> None:
    cache = DeviceCache(ttl_s=60)
    await store.set_credential("watch-1", "token", TOKEN)
    device, fresh = await asyncio.wait_for(cache.by_token(store, TOKEN), 5)
    assert device is not None and device.device_id == "watch-1" and fresh
    await revoke(store)  # behind the cache's back, as another process would
    again, fresh = await asyncio.wait_for(cache.by_token(store, TOKEN), 5)
    assert again == device and not fresh
    cache.forget()  # what the registry API does on every change
    assert (await asyncio.wait_for(cache.by_token(store, TOKEN), 5)) == (None, True)


async def test_an_unknown_token_is_not_remembered(store: SqliteStore) -> None:
    cache = DeviceCache(ttl_s=60)
    assert (await asyncio.wait_for(cache.by_token(store, TOKEN), 5)) == (None, True)
    await store.set_credential("watch-1", "token", TOKEN)  # registered meanwhile
    device, fresh = await asyncio.wait_for(cache.by_token(store, TOKEN), 5)
    assert device is not None and device.device_id == "watch-1" and fresh


async def test_no_cache_reads_the_store_every_time(store: SqliteStore) -> None:
    cache = DeviceCache(ttl_s=0)
    await store.set_credential("watch-1", "token", TOKEN)
    assert (await asyncio.wait_for(cache.by_token(store, TOKEN), 5))[0] is not None
    await revoke(store)
    assert (await asyncio.wait_for(cache.by_token(store, TOKEN), 5)) == (None, True)


async def test_the_cache_keeps_the_token_s_digest_not_the_token(store: SqliteStore) -> None:
    cache = DeviceCache(ttl_s=60)
    await store.set_credential("watch-1", "token", TOKEN)
    assert (await asyncio.wait_for(cache.by_token(store, TOKEN), 5))[0] is not None
    keys = [str(part) for key in cache._entries for part in key]
    assert keys and not any(TOKEN in k for k in keys)


async def test_the_request_s_resolve_reuses_the_device_the_token_check_read(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP alert: the token check reads the device; the ingress's resolve for the same request gets that
    record, fresh, without reading it again (issue 27: three reads of one device per HTTP alert)."""
    from bridge.ingress.binding import Claim

    cache = DeviceCache(ttl_s=60)
    await store.set_credential("watch-1", "token", TOKEN)
    device, _ = await asyncio.wait_for(cache.by_token(store, TOKEN), 5)
    assert device is not None
    reads: list[str] = []
    real_get = store.get_device

    async def counting_get(device_id: str) -> Device | None:
        reads.append(device_id)
        return await real_get(device_id)

    monkeypatch.setattr(store, "get_device", counting_get)
    claim = Claim("http", device_id="watch-1", auth="token")
    assert await asyncio.wait_for(cache.resolve(store, claim), 5) == (device, True)
    assert reads == []
    # Only that request's: the next resolve of the claim reads (and caches) as ever.
    assert await asyncio.wait_for(cache.resolve(store, claim), 5) == (device, True)
    assert reads == ["watch-1"]
    assert await asyncio.wait_for(cache.resolve(store, claim), 5) == (device, False)
    # A record the token check read longer ago than the cache's lifetime is never handed on as fresh.
    short = DeviceCache(ttl_s=0.05)
    await asyncio.wait_for(short.by_token(store, TOKEN), 5)
    await asyncio.sleep(0.1)
    again, fresh = await asyncio.wait_for(short.resolve(store, claim), 5)
    assert again is not None and fresh and reads == ["watch-1", "watch-1"]
