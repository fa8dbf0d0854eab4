"""Redis store beyond the shared contract: URL namespaces, exclusive leases across instances, replay-safe
commits, and a differential test that drives SQLite and Redis with the same random programme.

All against a real redis-server (the `redis_url` fixture), never a fake.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.core.ids import new_id
from bridge.core.model import Alert, AlertState, Device, HistoryEntry, utcnow
from bridge.store.base import Change, OutboxItem, Store
from bridge.store.redis import RedisStore, dump_keys, parse_url
from bridge.store.sqlite import SqliteStore
from tests.support.factories import make_alert, make_item


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two independent clients (as two bridge instances would have) on one namespace."""
    ns = f"t{new_id()}"
    a, b = RedisStore(f"{redis_url}?namespace={ns}"), RedisStore(redis_url, namespace=ns)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


def test_parse_url_takes_only_our_parameters() -> None:
    query = "namespace=site-a&dedupe_ttl_s=86400&health_check_interval=5"
    url, ns, ttl = parse_url(f"redis://127.0.0.1:6379/2?{query}", "x")
    assert (url, ns, ttl) == ("redis://127.0.0.1:6379/2?health_check_interval=5", "site-a", 86400)
    assert parse_url("redis://h:1/0", "sosbridge") == ("redis://h:1/0", "sosbridge", None)


async def test_url_namespace_shares_and_isolates(redis_url: str, pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    assert a.namespace == b.namespace
    await a.put_device(Device(device_id="seen-by-both", identifiers={"msisdn": "+447700900001"}))
    assert (await b.find_device("msisdn", "+447700900001")).device_id == "seen-by-both"  # type: ignore[union-attr]
    other = RedisStore(f"{redis_url}?namespace=o{new_id()}")
    await other.open()
    try:
        assert await other.get_device("seen-by-both") is None
        assert all(k.startswith(a.prefix) for k in await dump_keys(a)())
    finally:
        await other.close()


async def test_tokens_never_stored_in_clear(pair: tuple[RedisStore, RedisStore]) -> None:
    a, _ = pair
    await a.put_device(Device(device_id="d1"))
    await a.set_credential("d1", "token", "first-token-value")
    await a.set_credential("d1", "token", "second-token-value")  # rotation: the old token stops working
    assert await a.device_for_token("first-token-value") is None
    assert (await a.device_for_token("second-token-value")).device_id == "d1"  # type: ignore[union-attr]
    values: list[str] = []
    for key in await dump_keys(a)():
        kind = await a.r.type(key)
        if kind == "hash":
            values += [*(await a.r.hgetall(key)).keys(), *(await a.r.hgetall(key)).values()]
        elif kind == "string":
            values.append(await a.r.get(key))
    assert not any("token-value" in v for v in values)
    await a.remove_device("d1")
    assert await a.device_for_token("second-token-value") is None


async def test_two_instances_never_lease_the_same_row(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    rows = []
    for n in range(60):
        alert = make_alert(f"d{n}")
        rows.append(make_item(alert, 1, critical=n % 3 == 0))
        await a.commit(Change(alert=alert, outbox=[rows[-1]]))
    now = time.time()
    leases = await asyncio.gather(*[(a if n % 2 else b).lease(4, 30, now) for n in range(40)])
    ids = [i.item_id for batch in leases for i in batch]
    assert len(ids) == len(set(ids)) == 60
    assert sorted(ids) == sorted(r.item_id for r in rows)


async def test_a_commit_replayed_after_a_lost_reply_applies_once(pair: tuple[RedisStore, RedisStore]) -> None:
    a, _ = pair
    alert = make_alert("d1")
    change = Change(
        alert=alert,
        history=[HistoryEntry(at=utcnow(), event="received", state=AlertState.received)],
        outbox=[make_item(alert, 1)],
    )
    args = await a._commit_args(change, token="replay-1")
    assert (await a._script("commit", *args))[0] == "ok"
    # The same script with the same token, as _call sends it when the first reply never arrived.
    assert (await a._script("commit", *args))[0] == "ok"
    assert len(await a.history(alert.alert_id)) == 1
    assert len(await a.outbox_items(alert.alert_id)) == 1
    assert (await a.outbox_stats(time.time(), 3)).pending == 1


async def test_stand_down_waits_behind_the_alert_in_flight(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    alert = make_alert("d1")
    first = make_item(alert, 1)
    await a.commit(Change(alert=alert, outbox=[first]))
    now = time.time()
    assert [i.seq for i in await a.lease(10, 30, now)] == [1]
    cancelled = alert.model_copy(update={"state": AlertState.cancelled})
    await b.commit(Change(alert=cancelled, cancel_pending_outbox=True, outbox=[make_item(alert, 2)]))
    # The in-flight alert is not cancelled, and the stand-down cannot overtake it.
    assert [i.state for i in await b.outbox_items(alert.alert_id)] == ["inflight", "pending"]
    assert await b.lease(10, 30, now) == []
    await a.mark_delivered(first.item_id, now)
    assert [i.seq for i in await b.lease(10, 30, now)] == [2]


# -- differential: SQLite is the reference ---------------------------------------------------------------
# 12 programmes in the suite; SOSBRIDGE_DIFF_SEEDS=300 for a longer soak (300 agreed when this was written).
DIFF_SEEDS = int(os.environ.get("SOSBRIDGE_DIFF_SEEDS", "12"))


async def _run_programme(store: Store, seed: int) -> list[object]:
    """A random sequence of pipeline- and forwarder-like operations; returns every observable result."""
    rng = random.Random(seed)
    id_rng = random.Random(seed * 7919)
    clock = 1_000_000.0
    alerts: list[Alert] = []
    seqs: dict[str, int] = {}
    leased: list[OutboxItem] = []
    trace: list[object] = []

    def ident() -> str:
        return f"{id_rng.getrandbits(64):016x}"

    for _ in range(70):
        op = rng.choice(["new", "new", "update", "lease", "lease", "deliver", "retry", "dead", "cancel", "tick"])
        if op == "new" or not alerts:
            alert = make_alert(f"d{rng.randrange(4)}").model_copy(update={"alert_id": ident()})
            routes = ["default"] if rng.random() < 0.7 else ["a", "b"]
            critical = rng.random() < 0.6
            items = [make_item(alert, 1, critical=critical, route=r, at=clock, item_id=ident()) for r in routes]
            alerts.append(alert)
            seqs[alert.alert_id] = 1
            await store.commit(Change(alert=alert, outbox=items))
        elif op == "update":
            alert = rng.choice(alerts)
            seqs[alert.alert_id] += 1
            item = make_item(alert, seqs[alert.alert_id], at=clock, item_id=ident())
            await store.commit(Change(alert=alert, outbox=[item]))
        elif op == "lease":
            got = await store.lease(100, rng.choice([1.0, 5.0, 30.0]), clock)
            # Critical rows come first in both stores; within a class the order may differ (see README).
            assert [i.critical for i in got] == sorted((i.critical for i in got), reverse=True)
            leased = sorted(got, key=lambda i: i.item_id) + leased
            trace.append(("lease", sorted((i.item_id, i.seq, i.attempts, i.last_error) for i in got)))
        elif op in ("deliver", "retry", "dead") and leased:
            target = leased.pop(rng.randrange(len(leased)))
            if op == "deliver":
                await store.mark_delivered(target.item_id, clock)
            elif op == "retry":
                await store.reschedule(target.item_id, clock + rng.choice([0.5, 3.0]), "HTTP 503", target.attempts + 1)
            else:
                await store.mark_dead(target.item_id, "HTTP 400", target.attempts + 1)
        elif op == "cancel":
            alert = rng.choice(alerts)
            seqs[alert.alert_id] += 1
            stand_down = make_item(alert, seqs[alert.alert_id], at=clock, item_id=ident())
            await store.commit(Change(alert=alert, cancel_pending_outbox=True, outbox=[stand_down]))
        else:
            clock += rng.choice([0.5, 2.0, 10.0])
        stats = await store.outbox_stats(clock, 2)
        trace.append(("stats", op, stats))
    # Retention: close every other alert, purge, and the leftovers must agree too.
    for alert in alerts[::2]:
        await store.commit(Change(alert=alert.model_copy(update={"state": AlertState.resolved})))
    trace.append(("purged", await store.purge_closed(utcnow() + timedelta(seconds=1))))
    trace.append(("after purge", await store.outbox_stats(clock, 2)))
    for alert in alerts:
        trace.append((alert.alert_id, (await store.get_alert(alert.alert_id)) is not None))
        # Both order by seq; rows sharing a seq (one per route) have no specified order between them.
        items = sorted(await store.outbox_items(alert.alert_id), key=lambda i: (i.seq, i.route))
        trace.append(
            (
                alert.alert_id,
                await store.contact_sent(alert.alert_id),
                [(i.item_id, i.seq, i.route, i.state, i.attempts, i.last_error, i.lease_until) for i in items],
            )
        )
    return trace


@pytest.mark.parametrize("seed", range(DIFF_SEEDS))
async def test_redis_behaves_like_sqlite(seed: int, redis_url: str, tmp_path: Path) -> None:
    sqlite = SqliteStore(tmp_path / "ref.db")
    redis = RedisStore(redis_url, namespace=f"diff{new_id()}")
    await sqlite.open()
    await redis.open()
    try:
        expected = await _run_programme(sqlite, seed)
        actual = await _run_programme(redis, seed)
    finally:
        await sqlite.close()
        await redis.close()
    assert len(actual) == len(expected)
    for step, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert got == want, f"seed {seed}, step {step}"
