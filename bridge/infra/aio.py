"""Waiting with a deadline: the three asyncio waits every long-lived part of the bridge needs.

- `wait_event(event, timeout)`: sleep until `event` is set or `timeout` passes (a service loop's
  "tick or wake"). Unlike `asyncio.wait_for(event.wait(), t)` on Python 3.11, a cancellation that
  arrives just as the event is set is never lost (CPython gh-86296): the loop really stops.
- `await_ready(ready, task, timeout, what)`: a background task's start-up signal, with a deadline; a task
  that dies or stalls before it is ready raises `NotReady` naming it, instead of a start that never returns.
- `stop_tasks(tasks, timeout)`: cancel long-lived tasks and wait for them at most `timeout` seconds.
  A task still running then is logged at ERROR by name and left behind, so stopping is always bounded;
  the caller's own cancellation is never swallowed (`with suppress(CancelledError): await task` does).

Every other wait in the bridge has its own deadline or is a service loop's documented wait, cancelled
by its stop() (docs/testing/deadlines.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger("sosbridge.aio")

STOP_TIMEOUT_S = 5.0  # how long a cancelled service task may take to finish its cleanup
READY_TIMEOUT_S = 5.0  # a background listener subscribes at once: not ready by then means it is broken


class NotReady(RuntimeError):
    """A background task did not signal that it was ready in time (or ended before it did)."""


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Until `event` is set (True) or `timeout` seconds passed (False). Cancellation always propagates."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def await_ready(ready: asyncio.Event, task: asyncio.Task[object], timeout: float, what: str) -> None:
    """Until `task` sets `ready`. Raises NotReady if the task ends first (its error chained) or if
    `timeout` seconds pass; the task is then cancelled, so nothing half-started keeps running."""
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if ready.is_set():
        return
    if task.done():
        error = None if task.cancelled() else task.exception()
        raise NotReady(f"{what} ended before it was ready: {error!r}") from error
    await stop_tasks([task])
    raise NotReady(f"{what} was not ready within {timeout:g} s")


async def stop_tasks(tasks: Iterable[asyncio.Task[object]], timeout: float = STOP_TIMEOUT_S) -> list[str]:
    """Cancel `tasks` and wait for them, at most `timeout` seconds. Returns the names of the tasks still
    running after that (logged at ERROR: a task that ignores cancellation is a bug to fix, not to wait
    for). A task's own failure is logged, not raised: stopping goes on with the next part."""
    tasks = list(tasks)
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        # asyncio.wait neither cancels the tasks again nor swallows a cancellation of the caller.
        await asyncio.wait(pending, timeout=timeout)
    stuck = [t.get_name() for t in pending if not t.done()]
    if stuck:
        log.error("tasks did not stop after cancellation", extra={"tasks": stuck, "timeout_s": timeout})
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task failed", extra={"task": task.get_name(), "error": repr(task.exception())})
    return stuck
