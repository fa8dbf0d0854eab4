"""Ctrl-C for the command line: an interrupted command ends quietly, never with a traceback.

When SIGINT arrives, asyncio cancels the running command, and whatever the cancellation makes a task
raise (a connection refused by a server that is shutting down, say) would otherwise surface as the
command's error. `run_interruptible` turns anything raised after a SIGINT into KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def _guarded(coro: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        return await coro
    try:
        return await coro
    except BaseException:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def run_interruptible(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(coro), with Ctrl-C always surfacing as KeyboardInterrupt."""
    return asyncio.run(_guarded(coro))
