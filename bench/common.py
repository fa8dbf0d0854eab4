"""Shared bench plumbing: processes on loopback, /proc sampling, percentiles, machine facts, tables."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.infra.serving import free_port, wait_http, wait_port

__all__ = ["free_port", "wait_http", "wait_port"]  # re-exported for the bench modules

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def which(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


@dataclass
class Proc:
    """A child process we started; stopped by its own pid only."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def spawn(name: str, cmd: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    fh = open(log, "ab")
    proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    fh.close()
    return Proc(name, proc, log)


@contextlib.contextmanager
def running(procs: list[Proc]) -> Iterator[list[Proc]]:
    try:
        yield procs
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop()


def start_mosquitto(workdir: Path, inflight: int = 20) -> tuple[Proc, int]:
    """Our own broker. QoS 1 messages queued for a slow subscriber are not capped (the default 1000 would
    drop the excess and make a storm look lossy for the broker's sake, not the bridge's). `inflight` is
    max_inflight_messages, QoS 1 messages sent to one subscriber and not yet acknowledged (Mosquitto's
    default, 20, unless told)."""
    binary = which("mosquitto")
    if binary is None:
        raise RuntimeError("mosquitto is not installed (scripts/setup --services installs it)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"max_queued_messages 0\nmax_inflight_messages {inflight}\n"
    )
    proc = spawn("mosquitto", [binary, "-c", str(conf)], workdir)
    wait_port(port)
    return proc, port


def start_redis(workdir: Path) -> tuple[Proc, int]:
    binary = which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(workdir)]
    proc = spawn("redis", cmd, workdir)
    wait_port(port)
    return proc, port


# -- /proc sampling ----------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stat_cpu_s(stat_path: str | Path) -> tuple[float, float]:
    """User and system CPU seconds from a /proc `stat` file: a process's (every thread) or one thread's
    (/proc/PID/task/TID/stat)."""
    with open(stat_path) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def cpu_user_system_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used, every thread."""
    return stat_cpu_s(f"/proc/{pid}/stat")


def cpu_s(pid: int) -> float:
    return sum(cpu_user_system_s(pid))


def children(pid: int) -> list[int]:
    """The process's direct children (a `serve --workers 2` bridge's delivery process)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(x) for x in fh.read().split()]
    return found


def children_cpu_s(pid: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for child in children(pid):
        with contextlib.suppress(OSError):
            out[child] = cpu_s(child)
    return out


@dataclass
class Sampler:
    """Samples a process's RSS and CPU every `interval_s` in a thread while a block runs."""

    pid: int
    interval_s: float = 0.2
    rss: list[float] = field(default_factory=list)
    # Its children (delivery processes), summed: RSS samples and CPU % over the block.
    children_rss: list[float] = field(default_factory=list)
    children_cpu_pct: float = 0.0
    _children0: dict[int, float] = field(default_factory=dict)
    _cpu0: float = 0.0
    _t0: float = 0.0
    cpu_pct: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._cpu0, self._t0 = cpu_s(self.pid), time.monotonic()
        self._children0 = children_cpu_s(self.pid)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.rss.append(rss_mb(self.pid))
            self._sample_children()
            self._stop.wait(self.interval_s)

    def _sample_children(self) -> None:
        total = 0.0
        for child in children(self.pid):
            with contextlib.suppress(OSError):
                total += rss_mb(child)
        self.children_rss.append(total)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            elapsed = time.monotonic() - self._t0
            self.cpu_pct = 100.0 * (cpu_s(self.pid) - self._cpu0) / elapsed if elapsed > 0 else 0.0
            self.rss.append(rss_mb(self.pid))
            # A child that was there all along (one restarted meanwhile is not counted).
            after = children_cpu_s(self.pid)
            used = sum(after[c] - self._children0[c] for c in after if c in self._children0)
            self.children_cpu_pct = 100.0 * used / elapsed if elapsed > 0 else 0.0
        self._sample_children()

    @property
    def rss_max(self) -> float:
        return max(self.rss) if self.rss else 0.0


# -- statistics and reporting ------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
    }


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gb": mem_gb,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": __import__("sqlite3").sqlite_version,
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (readable on a terminal, pasteable into the README)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join([line, sep, *body])


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
