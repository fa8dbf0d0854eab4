"""`sosbridge demo`, the product's face, runs as a user would run it and exits 0 only when every expected
contact arrived."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_demo_command() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "demo"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = re.search(r"OK: (\d+)/(\d+) expected contacts arrived", run.stdout)
    assert summary and summary.group(1) == summary.group(2) and int(summary.group(2)) >= 19
    # Every transport shows up in the table.
    for transport in ("http", "mqtt", "coap", "serial", "alexa", "watch", "dc09"):
        assert f"│ {transport}" in run.stdout
    # An emergency contact (a carer's webhook) is told about the fall and then that help is on the way.
    assert "carer notified Catriona MacLeod: [EXERCISE] Alert: Morag MacLeod - a fall" in run.stdout
    assert "carer notified Catriona MacLeod: [EXERCISE] Help is on the way: Morag MacLeod" in run.stdout
