"""`sosbridge serve` tunes the collector once started (bridge/infra/gc_tuning.py); checked in a child process,
because frozen objects are never freed and this test process starts many bridges."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc
from bridge.infra.gc_tuning import GEN0_THRESHOLD, tune_for_serving
assert gc.get_threshold()[0] != GEN0_THRESHOLD and gc.get_freeze_count() == 0
leftover = [[]]; leftover[0].append(leftover)  # a reference cycle from start-up: collected, not frozen
del leftover
tune_for_serving()
print(gc.get_threshold(), gc.get_freeze_count(), len(gc.garbage))
"""


def test_tuning_freezes_start_up_and_raises_the_thresholds() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True)
    threshold, frozen, garbage = out.stdout.rsplit(")", 1)[0] + ")", *out.stdout.rsplit(")", 1)[1].split()
    assert threshold == "(20000, 20, 20)"
    assert int(frozen) > 1000  # the imported modules and everything start-up built
    assert garbage == "0"

