"""SqliteStore gives its write-ahead log's space back when the disk runs low (bridge/app/disk_alarm.py;
docs/testing/fault-suite.md, disk full), and keeps every committed alert while doing so.

Real SQLite files: the log's size is read from the file system.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.store.base import Change
from bridge.store.sqlite import WAL_SIZE_LIMIT, SqliteStore
from tests.support.factories import make_alert


async def test_the_log_is_checkpointed_and_truncated_and_nothing_committed_is_lost(
    sqlite_store: SqliteStore,
) -> None:
    store = sqlite_store
    alerts = [make_alert(f"d{i}") for i in range(40)]
    for alert in alerts:  # one commit each: the log grows by every page each commit touched
        await asyncio.wait_for(store.commit(Change(alert=alert)), 10)
    wal = Path(store.path + "-wal")
    grown = wal.stat().st_size
    assert grown > 50_000, grown

    freed = await asyncio.wait_for(store.reclaim_space(), 10)

    assert wal.stat().st_size == 0 and freed == grown
    for alert in alerts:
        found = await store.get_alert(alert.alert_id)
        assert found is not None and found.device_id == alert.device_id
    # The store keeps writing after the truncation, and asking again frees nothing more.
    await asyncio.wait_for(store.commit(Change(alert=make_alert("after"))), 10)
    assert await store.open_alert_for_device("after") is not None
    await asyncio.wait_for(store.reclaim_space(), 10)
    assert await asyncio.wait_for(store.reclaim_space(), 10) == 0


async def test_the_writer_connection_bounds_what_a_checkpoint_leaves_of_the_log(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    row = await store._run(lambda c: c.execute("PRAGMA journal_size_limit").fetchone())
    assert row[0] == WAL_SIZE_LIMIT


async def test_an_in_memory_store_has_nothing_to_give_back() -> None:
    store = SqliteStore(":memory:")
    await asyncio.wait_for(store.open(), 10)
    try:
        assert await asyncio.wait_for(store.reclaim_space(), 10) == 0
    finally:
        await store.close()
