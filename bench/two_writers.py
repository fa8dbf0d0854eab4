"""Two processes writing one SQLite store (WAL, synchronous=FULL): what a delivery process that leased and
marked rows itself would cost the ingest path, against the same bookkeeping in the ingest's own writer.

Usage: python -m bench.two_writers [--n 6000]
The ingest commits N new alerts (one outbox row each, 256 at a time, group-committed); the bookkeeping
leases due rows (64 at a time) and marks each delivered, as the forwarder does, either on the same store
object (`one`: one writer thread, one group commit) or from a second process on the same file (`two`:
SQLite's file lock between them, a busy handler that sleeps). Prints the ingest's rate and commit latency,
and the time until every row is delivered. Decides docs/architecture.md ("Processes").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import percentile
from bridge.store.base import Change
from bridge.store.sqlite import SqliteStore
from tests.support.factories import make_alert, make_item

BATCH = 64
CONCURRENCY = 256


async def ingest(store: SqliteStore, n: int) -> list[float]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        alert = make_alert(f"d{i}")
        async with gate:
            t0 = time.perf_counter()
            await store.commit(Change(alert=alert, outbox=[make_item(alert, 1)], first_alert=True))
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(one(i) for i in range(n)))
    return latencies


async def bookkeep(store: SqliteStore, n: int, deadline_s: float) -> int:
    """Lease and mark until `n` rows are delivered (a 2 ms pause when nothing is due: a bench, not a product)."""
    done = 0
    deadline = time.monotonic() + deadline_s
    while done < n and time.monotonic() < deadline:
        items = await store.lease(BATCH, 30.0, time.time())
        if not items:
            await asyncio.sleep(0.002)
            continue
        await asyncio.gather(*(store.mark_delivered(item.item_id, time.time()) for item in items))
        done += len(items)
    return done


async def run_one(db: Path, n: int) -> dict[str, float]:
    store = SqliteStore(db)
    await store.open()
    try:
        t0, c0 = time.monotonic(), time.process_time()
        keeper = asyncio.create_task(bookkeep(store, n, 300))
        latencies = await ingest(store, n)
        ingest_s = time.monotonic() - t0
        delivered = await keeper
        return summary(n, latencies, ingest_s, time.monotonic() - t0, time.process_time() - c0, delivered)
    finally:
        await store.close()


async def run_two(db: Path, n: int) -> dict[str, float]:
    store = SqliteStore(db)
    await store.open()
    keeper = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.two_writers", "--keeper", str(db), "--n", str(n), stdout=subprocess.PIPE)
    try:
        await asyncio.sleep(0.5)  # the keeper has opened the store
        t0, c0 = time.monotonic(), time.process_time()
        latencies = await ingest(store, n)
        ingest_s = time.monotonic() - t0
        ingest_cpu = time.process_time() - c0
        out, _ = await asyncio.wait_for(keeper.communicate(), 300)
        report = json.loads(out)
        result = summary(n, latencies, ingest_s, time.monotonic() - t0, ingest_cpu, report["delivered"])
        result["keeper_cpu_s"] = report["cpu_s"]
        return result
    finally:
        if keeper.returncode is None:
            keeper.kill()
            await keeper.wait()
        await store.close()


def summary(n: int, latencies: list[float], ingest_s: float, all_s: float, cpu: float,
            delivered: int) -> dict[str, float]:
    return {"ingest_per_s": round(n / ingest_s), "commit_p50_ms": round(1000 * percentile(latencies, 50), 1),
            "commit_p99_ms": round(1000 * percentile(latencies, 99), 1), "all_delivered_s": round(all_s, 2),
            "ingest_process_cpu_us_per_alert": round(1e6 * cpu / n), "delivered": delivered}


async def keeper_main(db: Path, n: int) -> None:
    store = SqliteStore(db)
    await store.open()
    try:
        c0 = time.process_time()
        delivered = await bookkeep(store, n, 300)
        print(json.dumps({"delivered": delivered, "cpu_s": round(time.process_time() - c0, 3)}))
    finally:
        await store.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--keeper", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.keeper:
        asyncio.run(keeper_main(Path(args.keeper), args.n))
        return 0
    for mode, run in (("one writer (bookkeeping in the ingest's process)", run_one),
                      ("two writers (bookkeeping in a second process)", run_two)):
        with tempfile.TemporaryDirectory(prefix="sosbridge-writers-") as tmp:
            print(mode, json.dumps(asyncio.run(run(Path(tmp) / "store.db", args.n))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
