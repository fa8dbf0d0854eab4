"""What each pytest-xdist worker owns when the suite runs in parallel (scripts/test runs `-n 2`).

Two tests that run at once must not meet: each worker gets its own HOME (under the one scripts/test sets),
its own Mosquitto (topics such as `hermes/...` and `owntracks/...` are fixed by the devices' protocols and
retained messages outlive a test, so one broker cannot be split by topic) and its own Redis database
number. In a serial run (no worker) nothing changes. Contract and how to run one test serially:
docs/testing/deadlines.md ("Running in parallel").
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Redis has databases 0-15 by default; a serial run keeps the database its URL names, worker gwN takes N + 1.
_REDIS_DBS = 16


def worker_id() -> str | None:
    """`gw0`, `gw1`, ... inside a pytest-xdist worker; None in a serial run."""
    return os.environ.get("PYTEST_XDIST_WORKER") or None


def worker_index() -> int | None:
    worker = worker_id()
    if worker is None:
        return None
    match = re.fullmatch(r"gw(\d+)", worker)
    if match is None:
        raise RuntimeError(f"unexpected PYTEST_XDIST_WORKER {worker!r}")
    return int(match.group(1))


def isolate_home() -> None:
    """Move HOME (and so `~/.local/share/sosbridge`, the default data dir) into a per-worker subdirectory."""
    worker = worker_id()
    if worker is None or not os.environ.get("HOME"):
        return
    shared = Path(os.environ["HOME"])
    home = shared / f"xdist-{worker}"
    home.mkdir(parents=True, exist_ok=True)
    # Caches (the Home Assistant venv of scripts/setup) are read, never written, by the tests: keep sharing them.
    os.environ.setdefault("XDG_CACHE_HOME", str(shared / ".cache"))
    os.environ["HOME"] = str(home)
    os.environ.pop("XDG_DATA_HOME", None)


def redis_url_for_worker(url: str) -> str:
    """`redis://host:port/0` → `redis://host:port/<N+1>` in worker gwN; unchanged in a serial run."""
    index = worker_index()
    if index is None:
        return url
    if index + 1 >= _REDIS_DBS:
        raise RuntimeError(f"{worker_id()}: more workers than Redis databases ({_REDIS_DBS})")
    match = re.fullmatch(r"(redis://[^/?]+)(?:/\d*)?(\?.*)?", url)
    if match is None:
        raise RuntimeError(f"SOSBRIDGE_TEST_REDIS_URL {url!r} is not redis://host:port/db")
    return f"{match.group(1)}/{index + 1}{match.group(2) or ''}"
