"""A flooding device's alert on the Redis store: how long one fold's commit takes as the alert's history
grows (each fold adds a contact and supersedes the one still waiting, as the pipeline does).

Usage: python -m bench.redis_fold [--folds 3000] [--redis redis://127.0.0.1:6379/15]
Without --redis it starts a redis-server of its own (persistence off). Prints, per block of folds, the
median and p99 commit latency and Redis's own time in EVALSHA (`INFO commandstats`, µs per call), so the
script's cost is seen apart from the round trip. Decides docs/operations/redis.md (the oar: index).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time

import redis

from bench.common import percentile
from bridge.infra.serving import free_port, wait_port
from bridge.store.base import Change
from bridge.store.redis import RedisStore
from tests.support.factories import make_alert, make_item


def evalsha_usec(url: str) -> tuple[int, int]:
    with redis.Redis.from_url(url) as r:
        stats = r.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0)), int(stats.get("usec", 0))


async def run(url: str, folds: int, block: int) -> list[dict[str, float]]:
    store = RedisStore(url, namespace=f"fold{time.time_ns()}")
    await store.open()
    alert = make_alert("flooder")
    await store.commit(Change(alert=alert, outbox=[make_item(alert, 1)]))
    rows: list[dict[str, float]] = []
    latencies: list[float] = []
    calls0, usec0 = evalsha_usec(url)
    for seq in range(2, folds + 2):
        change = Change(alert=alert, outbox=[make_item(alert, seq)], supersede_pending_updates=True)
        t0 = time.perf_counter()
        await store.commit(change)
        latencies.append((time.perf_counter() - t0) * 1000)
        if len(latencies) == block:
            calls, usec = evalsha_usec(url)
            rows.append({"history": seq, "p50_ms": round(percentile(latencies, 50), 3),
                         "p99_ms": round(percentile(latencies, 99), 3),
                         "redis_us_per_script": round((usec - usec0) / max(1, calls - calls0), 1)})
            latencies, calls0, usec0 = [], calls, usec
    await store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=3000)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--redis", default="")
    args = parser.parse_args()
    proc = None
    url = args.redis
    if not url:
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="redis-fold-")
        binary = shutil.which("redis-server") or "redis-server"
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", workdir],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        url = f"redis://127.0.0.1:{port}/0"
    try:
        for row in asyncio.run(run(url, args.folds, args.block)):
            print(json.dumps(row))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
