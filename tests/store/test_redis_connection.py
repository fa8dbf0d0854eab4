"""The Redis store's URL and connection (bridge/store/redis_connection.py): Sentinel URLs parse, and the
replication guard refuses a write no replica confirmed (so it is never acknowledged), on a real Redis."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from bridge.app.config import ConfigError, load_settings
from bridge.core.model import Device
from bridge.store import StoreError
from bridge.store.redis import RedisStore
from bridge.store.redis_connection import POOL_CONNECTIONS, UrlError, parse_target


def test_sentinel_url_parts() -> None:
    t = parse_target("redis+sentinel://app:pw@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2"
                     "?sentinel_password=spw&replica_timeout_ms=250")
    assert t.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (t.service, t.db, t.username, t.password, t.tls) == ("mymaster", 2, "app", "pw", False)
    assert t.sentinel_kwargs == {"password": "spw"} and t.min_replicas == 1 and t.replica_timeout_ms == 250
    assert "pw" not in t.describe() and t.describe().startswith("redis sentinel 10.0.0.1:26379,")
    assert parse_target("rediss+sentinel://h/m?min_replicas=0").tls is True
    plain = parse_target("redis://127.0.0.1:6379/0?min_replicas=2&health_check_interval=3")
    assert plain.min_replicas == 2 and plain.url == "redis://127.0.0.1:6379/0?health_check_interval=3"


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://h1,h2", "name the monitored service"),
    ("redis+sentinel://h1:x/m", "sentinel port must be a number"),
    ("redis+sentinel://h1/m/zero", "database must be a number"),
])
def test_bad_sentinel_urls_are_one_line(url: str, says: str) -> None:
    with pytest.raises(UrlError, match=says):
        parse_target(url)
    with pytest.raises(ConfigError, match="SOSBRIDGE_REDIS_URL"):
        load_settings(redis_url=url, environ={})


async def test_a_write_no_replica_confirmed_is_refused(redis_url: str) -> None:
    # The test Redis has no replica: with the guard on, every script write fails as a StoreError.
    store = RedisStore(f"{redis_url}?namespace=guard-test&min_replicas=1&replica_timeout_ms=50")
    await store.open()
    try:
        with pytest.raises(StoreError, match="held by 0 of 1 replicas"):
            await store.put_device(Device(device_id="guarded"))
    finally:
        await store.close()
    unguarded = RedisStore(f"{redis_url}?namespace=guard-test")
    await unguarded.open()
    try:
        await unguarded.put_device(Device(device_id="guarded"))
        assert (await unguarded.get_device("guarded")) is not None
    finally:
        await unguarded.close()


async def test_more_writes_in_flight_than_connections_wait_for_one(redis_url: str) -> None:
    """A flood has far more commits in flight than the pool has connections (redis-py 8's default pool
    failed each one beyond 100): they wait their turn and all land."""
    store = RedisStore(f"{redis_url}?namespace=pool-test-{secrets.token_hex(3)}")
    await store.open()
    try:
        n = POOL_CONNECTIONS * 8
        async with asyncio.timeout(30):
            await asyncio.gather(*(store.put_device(Device(device_id=f"p{i}")) for i in range(n)))
        assert len([d for d in await store.list_devices() if d.device_id.startswith("p")]) == n
    finally:
        await store.close()
