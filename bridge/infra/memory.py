"""The collector and the heap of a serving process, after start-up and after a burst (issue 27).

`settle_after_start()` collects start-up garbage (plug-in loading, settings, the FastAPI app) and freezes what
is left, so the collector never walks those objects again, and raises the collector's thresholds: CPython
starts a young pass every 700 net allocations, and a flood builds tens of thousands of short-lived models a
second, so the bridge collected every few frames and regularly walked the whole heap (bench/hotpath.py: about
a fifth of a flood's CPU; docs/testing/benchmarks.md). `AfterBurst` hands free heap pages back to the system
once a burst of work is over (glibc `malloc_trim`): CPython's allocator keeps what a flood of alerts freed
inside the C heap, where it counts as resident until trimmed. Both are no-ops where they do not apply (no
glibc); neither changes what the bridge does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("sosbridge.memory")


GEN0_THRESHOLD = 20_000  # net allocations between young passes (CPython's default: 700)
GEN1_THRESHOLD = 20  # young passes between middle passes (default 10)
GEN2_THRESHOLD = 20  # middle passes between full passes (default 10; CPython also waits for 25 % growth)


def settle_after_start() -> None:
    """Once, in a process that serves until it stops (never in a process that starts many bridges, such
    as the tests': frozen objects are never freed)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    except OSError:
        return None
    return trim


class AfterBurst:
    """Trim once a burst is over: a health pass that used more than `busy_cpu` of the process's CPU per
    second of wall time counts as busy; the first quiet pass after busy ones trims (at most once per
    `min_interval_s`)."""

    def __init__(self, busy_cpu: float = 0.1, min_interval_s: float = 30.0,
                 trim: Callable[[int], int] | None = None) -> None:
        self.busy_cpu = busy_cpu
        self.min_interval_s = min_interval_s
        self._trim = trim if trim is not None else _malloc_trim()
        self._busy_since_trim = False
        self._last_trim = float("-inf")
        self._last: tuple[float, float] | None = None  # (wall, cpu) at the previous pass

    def tick(self, now: float | None = None, cpu: float | None = None) -> bool:
        """One health pass; True when it trimmed now."""
        now = time.monotonic() if now is None else now
        cpu = time.process_time() if cpu is None else cpu
        previous, self._last = self._last, (now, cpu)
        if previous is None or now <= previous[0]:
            return False
        if (cpu - previous[1]) / (now - previous[0]) > self.busy_cpu:
            self._busy_since_trim = True
            return False
        if not self._busy_since_trim or self._trim is None or now - self._last_trim < self.min_interval_s:
            return False
        self._busy_since_trim = False
        self._last_trim = now
        self._trim(0)
        log.debug("heap trimmed after a burst")
        return True
