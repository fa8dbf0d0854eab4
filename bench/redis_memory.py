"""`python -m bench.redis_memory [--devices N]`: Redis memory per registered device, measured.

Starts its own redis-server (no persistence: memory is what is measured), reads `INFO memory` empty, seeds
N bench devices through the bridge's own Redis store (bench/seed.py: profile, label, person), reads it
again, then the same for N devices with a bearer token each (HTTP devices: one more credential key).
Prints bytes per device and keys per device; `--json` for the figures alone. Memory per alert is measured
by the flood of `python -m bench.run --only redis` (`redis_memory` in its results), which calls
`used_memory` here. docs/operations/deployment.md#capacity-model says what the figures mean.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.common import start_redis
from bench.harness import stop_quietly


def used_memory(port: int, db: int = 0) -> tuple[int, int]:
    """Redis's `used_memory` (bytes, the whole server) and the number of keys in `db`."""
    memory, keys, _commands, _cpu = redis_stats(port, db)
    return memory, keys


def redis_stats(port: int, db: int = 0) -> tuple[int, int, int, float]:
    """`used_memory`, the keys in `db`, `total_commands_processed` and the CPU seconds Redis used (user +
    system), the last two for the whole server since it started."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=10)
    try:
        info = client.info()
        cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return int(info["used_memory"]), int(client.dbsize()), int(info["total_commands_processed"]), cpu
    finally:
        client.close()


def per_device(port: int, db: int, n: int, http: bool) -> dict[str, Any]:
    from bench.seed import seed_sync
    from bridge.app.config import Settings

    before, _ = used_memory(port, db)
    ids = [f"mem{'h' if http else 'm'}{i:06d}" for i in range(n)]
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/{db}")
    seed_sync(settings, [] if http else ids, ids if http else [])
    after, keys = used_memory(port, db)
    return {"devices": n, "with_token": http, "bytes_per_device": round((after - before) / n),
            "keys": keys, "used_memory_mb": round(after / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20_000, help="devices to seed (default 20,000)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-memory-"))
    proc, port = start_redis(workdir)
    try:
        rows = [per_device(port, 0, args.devices, http=False), per_device(port, 1, args.devices, http=True)]
    finally:
        stop_quietly(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            kind = "with a bearer token" if row["with_token"] else "MQTT (no credential)"
            print(f"{row['devices']} devices, {kind}: {row['bytes_per_device']} bytes and "
                  f"{row['keys']} keys in all (Redis used_memory {row['used_memory_mb']} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
