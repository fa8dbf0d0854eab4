"""tests/support/ports.py: two test processes on one machine are never handed the same port."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.ports import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_another_test_process_never_gets_a_port_this_one_was_handed() -> None:
    mine = {free_port() for _ in range(200)}
    code = ("import json; from tests.support.ports import free_port; "
            "print(json.dumps(sorted(free_port() for _ in range(200))))")
    # The same worker name, so the same range: the claim files are all that keeps the two apart.
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTEST_XDIST_WORKER": os.environ.get("PYTEST_XDIST_WORKER", "")}
    if not env["PYTEST_XDIST_WORKER"]:
        env.pop("PYTEST_XDIST_WORKER")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                         check=True, cwd=ROOT)
    theirs = set(json.loads(out.stdout))
    assert len(mine) == 200 and len(theirs) == 200
    assert not mine & theirs
