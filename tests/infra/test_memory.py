"""After a burst the heap is trimmed once, on the first quiet health pass; never while busy, never twice
for one burst, never more often than the interval."""

from __future__ import annotations

import gc

from bridge.infra.memory import AfterBurst, settle_after_start


def test_trims_once_on_the_first_quiet_pass_after_a_burst() -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    ab = AfterBurst(busy_cpu=0.1, min_interval_s=30, trim=trim)
    assert ab.tick(now=0.0, cpu=0.0) is False  # first pass: nothing to compare with
    assert ab.tick(now=1.0, cpu=0.05) is False  # quiet, but no burst yet
    assert ab.tick(now=2.0, cpu=0.95) is False  # busy (90 % of a core)
    assert ab.tick(now=3.0, cpu=1.85) is False  # still busy
    assert ab.tick(now=4.0, cpu=1.86) is True and calls == [0]  # the burst is over: trim
    assert ab.tick(now=5.0, cpu=1.87) is False and calls == [0]  # once per burst
    assert ab.tick(now=6.0, cpu=2.87) is False  # another burst...
    assert ab.tick(now=7.0, cpu=2.88) is False  # ...over, but within 30 s of the last trim
    assert ab.tick(now=40.0, cpu=2.89) is True and calls == [0, 0]  # still owed: trimmed later


def test_without_malloc_trim_it_only_watches() -> None:
    ab = AfterBurst(trim=None)
    ab._trim = None  # as on a system without glibc
    assert [ab.tick(now=t, cpu=c) for t, c in ((0, 0), (1, 1), (2, 1))] == [False, False, False]


def test_settle_after_start_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    thresholds = gc.get_threshold()
    try:
        settle_after_start()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (20_000, 20, 20)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
