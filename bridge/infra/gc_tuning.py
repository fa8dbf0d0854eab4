"""Garbage collection for a long-running bridge under load (docs/operations/deployment.md#capacity-model).

CPython's default collector starts a young-generation pass every 700 net allocations. A flood builds
tens of thousands of short-lived models a second, so the bridge ran a collection every few frames and, every
hundred or so, a full pass over the whole heap (imported modules, schemas, profiles, caches): in
bench/hotpath.py about a quarter of the CPU of a 4,000-alert flood. `tune_for_serving()`, called once the
bridge has started, freezes what start-up built (`gc.freeze()`: never scanned again, never freed, which is
what a server's start-up state is for) and raises the thresholds, so passes are rarer and each full pass
walks only what was built since. Reference cycles are still collected; only less often.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000  # net allocations between young passes (CPython's default: 700)
GEN1_THRESHOLD = 20  # young passes between middle passes (default 10)
GEN2_THRESHOLD = 20  # middle passes between full passes (default 10; CPython also waits for 25 % growth)


def tune_for_serving() -> None:
    """Call once, after start-up, in a process that serves until it stops (never in a test process that
    starts many bridges: frozen objects are never freed)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
