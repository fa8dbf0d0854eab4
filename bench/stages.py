"""Where one alert's time goes when the bridge is idle: wall-clock marks along the MQTT adapter's path,
in one process (the broker connection replaced by bench.hotpath's stand-in, delivery in-process to the
recording receiver), one frame at a time with 100 ms between them.

Usage: python -m bench.stages [--n 40]
Prints the median time of each mark after the frame was handed to the adapter: the ingress starting, the
device read, the commit queued, the group commit's thread starting it, its SQL done, the commit durable
(COMMIT with its fsync, then the loop woken), the device acknowledged, and the contact leased. Decides
docs/testing/benchmarks.md ("Latest full run", paced p99).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import RecorderClient
from bench.hotpath import StandInConnection, driven_adapter, frame
from bench.seed import seed
from bridge.app.config import Settings
from device_adapters.mqtt.client import Inbound

Marks = dict[str, float]


def timed(marks: Marks, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (a coroutine function) marking its start and end, the first time in each frame."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        marks.setdefault(f"{name} starts", time.perf_counter())
        try:
            return await fn(*args, **kwargs)
        finally:
            marks.setdefault(f"{name} ends", time.perf_counter())

    return wrapper


class MarkingConnection(StandInConnection):
    def __init__(self, marks: Marks) -> None:
        super().__init__()
        self.marks = marks

    def ack(self, msg: Inbound) -> None:
        self.marks.setdefault("device acknowledged", time.perf_counter())
        super().ack(msg)


async def run(settings: Settings, n: int) -> list[dict[str, float]]:
    marks: Marks = {}
    conn = MarkingConnection(marks)
    runtime, adapter, status = await driven_adapter(settings, conn, tune_gc=False)
    store: Any = runtime.store
    runtime.ingress.receive = timed(marks, "ingress", runtime.ingress.receive)  # type: ignore[method-assign]
    store.get_device = timed(marks, "device read", store.get_device)
    store.commit = timed(marks, "commit", store.commit)
    store.lease = timed(marks, "lease", store.lease)
    write = store._write

    def marked_write(fn: Callable[..., Any], urgent: bool = False, first: bool = False) -> Any:
        def body(conn: Any) -> Any:
            marks.setdefault("SQL starts (writer thread)", time.perf_counter())
            try:
                return fn(conn)
            finally:
                marks.setdefault("SQL ends", time.perf_counter())

        return write(body, urgent=urgent, first=first)

    store._write = marked_write
    rows: list[dict[str, float]] = []
    for i in range(n):
        marks.clear()
        conn.expect = conn.acked + 1
        conn.done.clear()
        t0 = time.perf_counter()
        adapter._on_message(frame(f"h{i}", i))
        await asyncio.wait_for(conn.done.wait(), 10)
        await asyncio.sleep(0.1)  # idle between frames: the delivery and its bookkeeping finish
        rows.append({k: (v - t0) * 1000 for k, v in marks.items()})
    status.cancel()
    await runtime.stop()
    return rows[min(10, n // 4):]  # the first frames warm caches and the connection pool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sosbridge-stages-"))
    rx = RecorderClient(work)
    try:
        ids = [f"h{i}" for i in range(args.n)]
        settings = Settings(db=str(work / "stages.db"), data_dir=str(work), platform_url=rx.url, http_port=0,
                            workers=1, platform_secret="bench-secret-0123456789abcdef0123",
                            admin_token="bench-admin-0123456789abcdef")
        asyncio.run(seed(settings, ids))
        rows = asyncio.run(run(settings, args.n))
    finally:
        rx.close()
    names = {k for r in rows for k in r}
    medians = {k: statistics.median([r[k] for r in rows if k in r]) for k in names}
    for name in sorted(names, key=medians.__getitem__):
        print(f"{medians[name]:8.3f} ms  {name}")


if __name__ == "__main__":
    main()
