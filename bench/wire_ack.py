#!/usr/bin/env python3
"""Time from a device's alarm to the wire acknowledgement it waits for, which the bridge sends only once
the alert is stored: a watch's `AL` frame → `[..*AL]`, a DC-09 panic → `ACK` (plain TCP, plain UDP,
AES-128 TCP). Embedded bridge on SQLite, real sockets on 127.0.0.1, one device per alarm (each is a new
alert). `bench/wire_ack.py [--n 200] [--concurrency 20]`; prints p50/p95/max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bridge.core.model import Device  # noqa: E402
from simulator.devices.dc09 import VirtualPanel  # noqa: E402
from simulator.devices.watch import VirtualWatch  # noqa: E402
from simulator.harness import embedded_stack  # noqa: E402

KEY = "bench-dc09-key16"


async def timed(n: int, concurrency: int, one: Callable[[int], Awaitable[bool]]) -> tuple[list[float], int]:
    gate = asyncio.Semaphore(concurrency)
    times: list[float] = []
    failures = 0

    async def run(i: int) -> None:
        nonlocal failures
        async with gate:
            started = time.perf_counter()
            ok = await one(i)
            if ok:
                times.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1

    await asyncio.gather(*(run(i) for i in range(n)))
    return times, failures


def line(name: str, times: list[float], failures: int) -> str:
    if not times:
        return f"{name:<22} no acknowledgements ({failures} failures)"
    q = statistics.quantiles(times, n=20) if len(times) > 1 else [times[0]] * 19
    return (f"{name:<22} n={len(times):<5} p50={statistics.median(times):6.1f}  p95={q[18]:6.1f}  "
            f"max={max(times):6.1f} ms  failures={failures}")


async def main(n: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_stack(Path(tmp), embedded_mqtt=False, auto_ack_s=None) as stack:
            watch_port, dc09_port = stack.settings.watch_port, stack.settings.dc09_port
            store = stack.bridge.runtime.store
            for i in range(n):
                await store.put_device(Device(device_id=f"w{i}", profile_id="watch-3g-protocol",
                                              identifiers={"watch": f"{9000000000 + i}"}))
                for kind, prefix in (("t", "C"), ("u", "E"), ("a", "A")):  # accounts are hex
                    await store.put_device(Device(device_id=f"{kind}{i}", profile_id="dc09-alarm-panel",
                                                  identifiers={"dc09": f"{prefix}{i:04d}"}))
                await store.set_credential(f"a{i}", "dc09_key", KEY, hashed=False)

            async def watch_alarm(i: int) -> bool:
                device = VirtualWatch("127.0.0.1", watch_port, f"{9000000000 + i}")
                try:
                    return await device.alarm("sos", timeout=10) is not None
                finally:
                    await device.close()

            def panel(prefix: str, key: str | None = None, udp: bool = False) -> Callable[[int], Awaitable[bool]]:
                async def one(i: int) -> bool:
                    p = VirtualPanel("127.0.0.1", dc09_port, f"{prefix}{i:04d}", key, udp=udp)
                    answer = await p.send(p.sia("PA", "001"), timeout=10)
                    return answer is not None and answer.token == "ACK"
                return one

            print(f"{n} alarms per row, {concurrency} at a time; each from its own device (a new alert)")
            for name, one in [("watch AL -> AL", watch_alarm), ("DC-09 TCP -> ACK", panel("C")),
                              ("DC-09 UDP -> ACK", panel("E", udp=True)), ("DC-09 AES TCP -> *ACK", panel("A", KEY))]:
                times, failures = await timed(n, concurrency, one)
                print(line(name, times, failures))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrency))
