"""The disk_low alarm (bridge/app/disk_alarm.py): below the minimum the store gives back what it can
first, and the alarm goes up only if that was not enough, or if the store could not give anything back.

Free space is stubbed (a test cannot shrink the machine's disk); the store is a recording stand-in.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.app import disk_alarm
from bridge.store.base import StoreError

MIB = 1024 * 1024


class Forwarder:
    def __init__(self) -> None:
        self.alarms: dict[str, str] = {}

    def raise_alarm(self, reason: str, detail: str) -> None:
        self.alarms[reason] = detail

    def clear_alarm(self, reason: str) -> None:
        self.alarms.pop(reason, None)


class Store:
    def __init__(self, disk: dict[str, int], gives: int, fails: bool = False) -> None:
        self.disk, self.gives, self.fails, self.calls = disk, gives, fails, 0

    async def reclaim_space(self) -> int:
        self.calls += 1
        if self.fails:
            raise StoreError("sqlite: database or disk is full")
        self.disk["free"] += self.gives
        return self.gives


def runtime(tmp_path: Path, store: Store) -> Any:
    settings = SimpleNamespace(data_dir=str(tmp_path), db=str(tmp_path / "b.db"), redis_url="", disk_min_free_mb=1)
    return SimpleNamespace(settings=settings, store=store, forwarder=Forwarder())


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    state = {"free": 0}
    monkeypatch.setattr(disk_alarm, "free_bytes", lambda _path: state["free"])
    return state


@pytest.mark.parametrize(("free", "gives", "alarm"), [(MIB // 2, MIB, False), (MIB // 2, MIB // 4, True)])
async def test_low_space_is_reclaimed_before_the_alarm_goes_up(
    tmp_path: Path, disk: dict[str, int], free: int, gives: int, alarm: bool
) -> None:
    disk["free"] = free
    rt = runtime(tmp_path, Store(disk, gives))
    await disk_alarm.check_disk(rt)
    assert rt.store.calls == 1
    assert (disk_alarm.ALARM in rt.forwarder.alarms) is alarm


async def test_a_store_that_cannot_checkpoint_still_raises_the_alarm_and_it_clears_with_space(
    tmp_path: Path, disk: dict[str, int]
) -> None:
    disk["free"] = 1000
    rt = runtime(tmp_path, Store(disk, 0, fails=True))
    await disk_alarm.check_disk(rt)
    assert "1000 bytes free" in rt.forwarder.alarms[disk_alarm.ALARM]
    disk["free"] = 2 * MIB
    await disk_alarm.check_disk(rt)
    assert disk_alarm.ALARM not in rt.forwarder.alarms
    assert rt.store.calls == 1  # enough space: the store is not asked
