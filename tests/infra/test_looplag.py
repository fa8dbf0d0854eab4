"""bridge/infra/looplag.py: a blocked event loop is seen as late, by about as long as it was blocked."""

from __future__ import annotations

import asyncio
import time

from bridge.infra.looplag import watch_lag
from bridge.infra.metrics import Metrics
from tests.support.factories import until


async def test_a_blocked_loop_is_observed_late() -> None:
    seen: list[float] = []
    task = asyncio.create_task(watch_lag(seen.append, interval_s=0.02))
    try:
        await until(lambda: len(seen) >= 2, 5)
        time.sleep(0.3)  # blocks the loop: the watcher's timer fires about 0.3 s late
        await until(lambda: any(s >= 0.2 for s in seen), 5)
    finally:
        task.cancel()
    assert all(s >= 0 for s in seen)


async def test_the_lag_is_exported_as_a_histogram() -> None:
    metrics = Metrics()
    task = asyncio.create_task(watch_lag(metrics.loop_lag.observe, interval_s=0.01))
    try:
        await until(lambda: _count(metrics) >= 3, 5)
    finally:
        task.cancel()
    every = metrics.registry.get_sample_value("sosbridge_event_loop_lag_seconds_bucket", {"le": "+Inf"})
    assert every == _count(metrics)


def _count(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("sosbridge_event_loop_lag_seconds_count") or 0.0

