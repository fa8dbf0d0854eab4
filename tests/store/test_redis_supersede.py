"""A flooding device's alert on the Redis store (issue 27): each fold adds a contact and supersedes the
one still waiting, and the commit script's work must not grow with the alert's history, because it runs
inside Redis and holds every other instance's commit while it runs.

A redis-server of the test's own, so `INFO commandstats` counts only this test's calls (the shared one
serves the other pytest worker too). Also: alerts stored before the route index existed are indexed on
their first commit, so their waiting rows are still cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from bridge.core.model import Alert, AlertState
from bridge.store.base import Change
from bridge.store.redis import RedisStore
from simulator.redis_server import throwaway_redis
from tests.support.factories import make_alert, make_item
from tests.support.paths import need_binary


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    need_binary("redis-server")
    with throwaway_redis(tmp_path, durable=False) as url:
        yield url


@pytest.fixture
async def store(private_redis: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(private_redis, namespace="t")
    await asyncio.wait_for(s.open(), 10)
    yield s
    await s.close()


def hmget_calls(url: str) -> int:
    with redis.Redis.from_url(url) as r:
        return int(r.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


async def fold(store: RedisStore, seq: int, alert: Alert) -> None:
    change = Change(alert=alert, outbox=[make_item(alert, seq)], supersede_pending_updates=True)
    await asyncio.wait_for(store.commit(change), 10)


async def test_a_supersede_reads_only_the_active_rows_however_long_the_history(
    store: RedisStore, private_redis: str
) -> None:
    alert = make_alert("flooder")
    await asyncio.wait_for(store.commit(Change(alert=alert, outbox=[make_item(alert, 1)])), 10)
    [sos] = await store.lease(10, 30, time.time())
    await store.mark_delivered(sos.item_id, time.time())
    for seq in range(2, 302):  # 300 folds: each new update supersedes the one still waiting
        await fold(store, seq, alert)
    before = hmget_calls(private_redis)
    await fold(store, 302, alert)
    reads = hmget_calls(private_redis) - before
    states = [i.state for i in await store.outbox_items(alert.alert_id)]
    assert states.count("cancelled") == 300 and states[-1] == "pending" and states[0] == "delivered"
    # One waiting row to look at, and set_state's own reads: not one read per row of the history (was 301+).
    assert reads <= 6, reads


async def test_an_alert_stored_before_the_route_index_still_has_its_waiting_rows_cancelled(
    store: RedisStore, private_redis: str
) -> None:
    alert = make_alert("old")
    rows = [make_item(alert, 1, route="primary"), make_item(alert, 1, route="secondary")]
    await asyncio.wait_for(store.commit(Change(alert=alert, outbox=rows)), 10)
    with redis.Redis.from_url(private_redis) as r:
        assert r.delete(f"{store.prefix}oar:{alert.alert_id}") == 1  # as an older version left it
    stand_down = alert.model_copy(update={"state": AlertState.cancelled})
    await asyncio.wait_for(
        store.commit(Change(alert=stand_down, cancel_pending_outbox=True, outbox=[make_item(alert, 2)])), 10
    )
    by_route = {(i.seq, i.route): i.state for i in await store.outbox_items(alert.alert_id)}
    assert by_route == {(1, "primary"): "cancelled", (1, "secondary"): "cancelled", (2, "default"): "pending"}
