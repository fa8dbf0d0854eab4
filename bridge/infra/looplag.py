"""How late the event loop runs: a timer every 0.1 s, and how much later than asked it fired.

Everything in the bridge's main process shares one event loop: reading devices, answering them, delivery's
round trips, the status publisher, `/metrics` itself. A late timer means every one of those waited that long
for its next step; it is what an overloaded bridge looks like from the inside
(`sosbridge_event_loop_lag_seconds`, docs/operations/metrics.md). Issue 27: in a storm the loop's rounds
took 0.2-0.47 s before senders took turns (bridge/ingress/turns.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

INTERVAL_S = 0.1


async def watch_lag(observe: Callable[[float], None], interval_s: float = INTERVAL_S) -> None:
    """Until cancelled: observe each timer's lateness in seconds (0 when on time)."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - asked))
