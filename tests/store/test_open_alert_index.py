"""SqliteStore's index of devices that may have an open alert (issue 27): a device's first alert costs
no point lookup on the event loop, and the answer is always the store's.

Real SQLite files. `reads` counts the lookups that reach the database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bridge.core.model import AlertState
from bridge.store.base import Change, ConcurrentUpdate
from bridge.store.sqlite import SqliteStore
from tests.support.factories import make_alert


class Counted:
    def __init__(self, store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        real = store._lookup

        async def counting(fn: Any) -> Any:
            self.reads += 1
            return await real(fn)

        monkeypatch.setattr(store, "_lookup", counting)


async def test_a_device_with_no_open_alert_costs_no_lookup_and_one_with_one_does(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    counted = Counted(store, monkeypatch)
    assert await store.open_alert_for_device("d1") is None
    assert counted.reads == 0
    alert = make_alert("d1")
    await asyncio.wait_for(store.commit(Change(alert=alert, check_open_alert=True)), 10)
    found = await store.open_alert_for_device("d1")
    assert found is not None and found.alert_id == alert.alert_id and counted.reads == 1
    # Closed: the commit saw none left, so the device's next first alert needs no lookup again.
    closed = alert.model_copy(update={"state": AlertState.resolved, "version": alert.version + 1})
    await asyncio.wait_for(store.commit(Change(alert=closed, expected_version=alert.version)), 10)
    assert await store.open_alert_for_device("d1") is None
    assert counted.reads == 1


async def test_two_open_alerts_closing_one_keeps_the_other(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    first, second = make_alert("d2"), make_alert("d2")
    await asyncio.wait_for(store.commit(Change(alert=first)), 10)
    await asyncio.wait_for(store.commit(Change(alert=second)), 10)
    closed = first.model_copy(update={"state": AlertState.resolved, "version": first.version + 1})
    await asyncio.wait_for(store.commit(Change(alert=closed, expected_version=first.version)), 10)
    found = await store.open_alert_for_device("d2")
    assert found is not None and found.alert_id == second.alert_id


async def test_open_alerts_written_before_a_restart_are_found(tmp_path: Path) -> None:
    before = SqliteStore(tmp_path / "r.db")
    await asyncio.wait_for(before.open(), 10)
    alert = make_alert("d3")
    await asyncio.wait_for(before.commit(Change(alert=alert)), 10)
    await before.close()
    after = SqliteStore(tmp_path / "r.db")
    await asyncio.wait_for(after.open(), 10)
    try:
        found = await after.open_alert_for_device("d3")
        assert found is not None and found.alert_id == alert.alert_id
    finally:
        await after.close()


async def test_an_alert_another_writer_opened_is_caught_by_the_commit_and_then_read(tmp_path: Path) -> None:
    """Another process writes behind this store's back: this store believes the device has no open alert;
    its new-alert commit is refused (the transaction's own check), and the retry's lookup reads it."""
    ours, theirs = SqliteStore(tmp_path / "w.db"), SqliteStore(tmp_path / "w.db")
    await asyncio.wait_for(ours.open(), 10)
    await asyncio.wait_for(theirs.open(), 10)
    try:
        other = make_alert("d4")
        await asyncio.wait_for(theirs.commit(Change(alert=other)), 10)
        assert await ours.open_alert_for_device("d4") is None  # stale, by construction
        mine = make_alert("d4")
        with pytest.raises(ConcurrentUpdate):
            await asyncio.wait_for(
                ours.commit(Change(alert=mine, check_open_alert=True, expected_open_alert=None)), 10)
        found = await ours.open_alert_for_device("d4")
        assert found is not None and found.alert_id == other.alert_id
        assert await ours.get_alert(mine.alert_id) is None  # the refused alert was never written
    finally:
        await ours.close()
        await theirs.close()

