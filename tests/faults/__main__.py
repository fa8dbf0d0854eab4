"""`python -m tests.faults --runs N`: the fault scenarios with large counts; prints a table, exits 1 on loss."""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.faults import scenarios
from tests.faults.harness import RedisServer, Tally, binary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    p.add_argument("--runs", type=int, default=5, help="runs of each scenario")
    p.add_argument("--alerts", type=int, default=100, help="alerts per run")
    p.add_argument("--down-s", type=float, default=60.0, help="receiver outage (a minute by default)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--only", action="append", help="scenario name (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    a = p.parse_args(argv)
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="sosfaults-redis-"))
    shared = RedisServer(work, durable=True)
    shared.start()
    n = a.alerts
    plan: dict[str, Callable[[], Tally]] = {
        "kill9-sqlite": lambda: scenarios.kill9_stream(None, n, None, rng),
        "kill9-redis": lambda: scenarios.kill9_stream(None, n, shared.url, rng),
        "two-instances-kill9": lambda: scenarios.two_instances(shared.url, n, True, rng),
        "redis-restart": lambda: scenarios.redis_restart(n, 3.0, rng),
        "receiver-down": lambda: scenarios.receiver_down(n, a.down_s, shared.url, rng),
        "receiver-slow": lambda: scenarios.receiver_slow(max(4, n // 10), 5.0, shared.url),
    }
    if binary("mosquitto"):
        plan["mosquitto-restart"] = lambda: scenarios.mosquitto_restart(n, 3.0, rng)
        plan["broker-unreachable-at-start"] = lambda: scenarios.broker_unreachable_at_start(n)
    results: dict[str, dict[str, float]] = {}
    try:
        for name, run in plan.items():
            if a.only and name not in a.only:
                continue
            total = Tally(set(), Counter())
            started = time.monotonic()
            for _ in range(a.runs):
                total = total + run()
            results[name] = {**total.as_dict(), "runs": a.runs, "seconds": round(time.monotonic() - started, 1)}
            if not a.json:
                r = results[name]
                print(
                    f"{name:22} runs={a.runs:<3} expected={r['expected']:<6} delivered={r['delivered']:<6} "
                    f"lost={r['lost']:<4} duplicates={r['duplicates']:<4} ({r['seconds']} s)",
                    flush=True,
                )
    finally:
        shared.stop()
    if a.json:
        print(json.dumps(results, indent=2))
    return 1 if any(r["lost"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
