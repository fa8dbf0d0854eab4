"""CPU over time, per thread of the bridge, for its delivery processes, and for the whole machine.

`bench.profile --timeline` samples every `interval_s` while the load runs and prints one row per sample:
how much of a core each of the bridge's threads used (the main thread is its event loop; the others are
the SQLite writer and reader, asyncio's helpers), its child processes together, and the machine's busy
cores. This is what showed a flood's two phases (docs/testing/benchmarks.md#flood-phases): the intake,
with the main process at one core and the second core partly idle, then the delivery of the backlog.
The reading of /proc is here; `rows` is pure.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import CLK_TCK, children_cpu_s, stat_cpu_s

Sample = tuple[float, dict[str, float], float, float]  # (time, CPU s per thread, children's CPU s, machine busy s)


def _thread_cpu_s(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out[task.name] = sum(stat_cpu_s(task / "stat"))
    return out


def _machine_busy_s() -> float:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values) - idle) / CLK_TCK


@dataclass
class Timeline:
    """Samples `pid` in a thread of its own while a `with` block runs."""

    pid: int
    interval_s: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Timeline:
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), _thread_cpu_s(self.pid), sum(children_cpu_s(self.pid).values()),
                                     _machine_busy_s()))
            self._stop.wait(self.interval_s)

    def report(self) -> str:
        return render(rows(self.samples, str(self.pid)))


def rows(samples: list[Sample], main_tid: str, top_threads: int = 2) -> list[tuple[float, list[float], float, float]]:
    """Per interval: seconds since the first sample, % of a core for the main thread and the next busiest
    `top_threads - 1` threads (by total CPU over the run), the children, and the machine. Pure."""
    if len(samples) < 2:
        return []
    first, last = samples[0][1], samples[-1][1]
    others = sorted((t for t in last if t != main_tid), key=lambda t: first.get(t, 0.0) - last[t])
    tids = [main_tid, *others[:top_threads - 1]]
    out = []
    for (t0, a, c0, m0), (t1, b, c1, m1) in itertools.pairwise(samples):
        dt = max(t1 - t0, 1e-9)
        threads = [100 * (b.get(t, 0.0) - a.get(t, 0.0)) / dt for t in tids]
        out.append((t1 - samples[0][0], threads, 100 * (c1 - c0) / dt, 100 * (m1 - m0) / dt))
    return out


def render(table: list[tuple[float, list[float], float, float]]) -> str:
    if not table:
        return "timeline: too few samples"
    n = len(table[0][1])
    head = ["s", "main thread", *(f"thread {i}" for i in range(2, n + 1)), "delivery processes", "machine"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for t, threads, kids, machine in table:
        lines.append(" | ".join([f"{t:5.2f}", *(f"{v:4.0f} %" for v in threads), f"{kids:4.0f} %",
                                 f"{machine:4.0f} % of {100 * (os.cpu_count() or 1)}"]))
    return "\n".join(lines)
