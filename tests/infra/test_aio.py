"""bridge.infra.aio: waits with deadlines that never lose a cancellation (real asyncio tasks, no mocks)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.infra.aio import NotReady, await_ready, stop_tasks, wait_event


async def _tick_or_wake(wake: asyncio.Event, ticks: list[int]) -> None:
    """The shape of every service loop here: sleep until woken or the tick, then go round again."""
    while True:
        wake.clear()
        await wait_event(wake, 0.2)
        ticks.append(1)


async def test_a_cancel_arriving_as_the_loop_is_woken_stops_it() -> None:
    """Python 3.11's asyncio.wait_for(event.wait(), t) returned normally here and the loop ran on, so a
    stop() awaiting it never returned (the hang of test_a_device_raising_its_own_alerts_is_heard)."""
    wake, ticks = asyncio.Event(), []
    task = asyncio.create_task(_tick_or_wake(wake, ticks))
    await asyncio.sleep(0.05)  # the loop is waiting
    wake.set()
    task.cancel()  # in the same step as the wake, as when the bus listener wakes it just before stop()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()


async def test_wait_event_reports_set_or_timed_out() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5) is True
    assert await wait_event(event, 0) is True  # already set: no wait at all


async def test_stop_tasks_is_bounded_and_names_a_task_that_ignores_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue  # the bug stop_tasks must survive: a task that will not stop

    polite = asyncio.create_task(asyncio.sleep(10), name="polite")
    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="sosbridge.aio"):
        stuck = await stop_tasks([polite, task], timeout=0.2)
    assert stuck == ["stubborn"] and polite.cancelled()
    assert any(getattr(r, "tasks", None) == ["stubborn"] for r in caplog.records)
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.done()


async def test_stop_tasks_does_not_swallow_the_callers_own_cancellation() -> None:
    target = asyncio.create_task(asyncio.sleep(10))

    async def stopper() -> None:
        await stop_tasks([target], timeout=5)

    stopping = asyncio.create_task(stopper())
    await asyncio.sleep(0)
    stopping.cancel()
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert stopping in done and stopping.cancelled()


async def test_await_ready_fails_when_the_task_dies_or_stalls() -> None:
    async def dies(ready: asyncio.Event) -> None:
        raise OSError("subscribe failed")

    async def stalls(ready: asyncio.Event) -> None:
        await asyncio.sleep(10)

    async def fine(ready: asyncio.Event) -> None:
        ready.set()
        await asyncio.sleep(10)

    ready = asyncio.Event()
    with pytest.raises(NotReady, match=r"ended before it was ready.*subscribe failed"):
        await await_ready(ready, asyncio.create_task(dies(ready)), 5, "the listener")
    ready = asyncio.Event()
    stalled = asyncio.create_task(stalls(ready))
    with pytest.raises(NotReady, match=r"not ready within 0\.1 s"):
        await await_ready(ready, stalled, 0.1, "the listener")
    assert stalled.cancelled()
    ready = asyncio.Event()
    ok = asyncio.create_task(fine(ready))
    await await_ready(ready, ok, 5, "the listener")
    await stop_tasks([ok])
