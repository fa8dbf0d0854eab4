"""CPU per frame of the bridge's own Python, in one process: the MQTT adapter's receive path, the ingress,
the pipeline, SQLite (WAL, synchronous=FULL) and delivery to the recording receiver, with the bridge's MQTT
connection (device_adapters/mqtt/client.py) replaced by a stand-in that hands frames over and records
acknowledgements.

It leaves out what the full bench measures (the broker, the socket reader, the load generator), so builds can
be compared by CPU per frame on a loaded machine, where the rates of `bench.run` move by 2x between runs.
`process_time` counts every thread of this process (the SQLite writer included), not the recorder's.

Usage: python -m bench.hotpath [--n 4000] [--storm 2000] [--flood 20000] [--default-gc]
  first alerts: N frames, one each from N registered devices (as the `bridge` step's flood)
  a storm:      STORM devices' first alerts and ten byte-identical copies of each, shuffled (bench.run's storm)
  one flooder:  FLOOD frames from one device, SOS presses with new message ids alternating with locations
                (with new message ids, as bench/flooder.py; then one identical fix without an id)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import RecorderClient
from bench.seed import TENANT, seed
from bridge.app.config import Settings
from bridge.app.runtime import BridgeRuntime
from bridge.infra.memory import settle_after_start
from device_adapters.mqtt.adapter import MqttAdapter
from device_adapters.mqtt.client import Inbound


class StandInConnection:
    """What the adapter needs of its connection: acknowledgements and slots are counted, publishes dropped."""

    def __init__(self) -> None:
        self.acked = 0
        self.published = 0
        self.done = asyncio.Event()
        self.expect = 0

    def ack(self, msg: Inbound) -> None:
        self.acked += 1
        if self.acked >= self.expect:
            self.done.set()

    def release_slot(self) -> None:
        pass

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        self.published += 1


def frame(device_id: str, n: int, location_only: bool = False, ids: bool = True) -> Inbound:
    body: dict[str, Any] = {"location": {"lat": 51.5007, "lon": -0.1246, "accuracy_m": 8}, "battery": 87}
    if location_only:
        body["action"] = "location"
        if ids:
            body["message_id"] = f"m-{device_id}-{n}"
    else:
        body.update(kind="sos", message_id=f"m-{device_id}-{n}")
    return Inbound(f"sosbridge/{TENANT}/{device_id}/alert", json.dumps(body).encode(), 1, False, n, False)


async def driven_adapter(
    settings: Settings, conn: StandInConnection, tune_gc: bool = True
) -> tuple[BridgeRuntime, MqttAdapter, asyncio.Task[None]]:
    """A started runtime with no transport of its own, and an MQTT adapter on `conn` that the caller drives
    with `adapter._on_message(frame)`; cancel the returned status task, then stop the runtime."""
    runtime = BridgeRuntime(settings)
    runtime.adapters = []
    await runtime.start()
    if tune_gc:
        settle_after_start()  # as `sosbridge serve` does once it has started
    adapter = MqttAdapter()
    adapter.ctx = runtime
    adapter.profiles = runtime.profiles
    adapter.conn = conn  # type: ignore[assignment]  # the stand-in for the broker connection
    ready = asyncio.Event()
    status = asyncio.create_task(adapter._status_loop(ready))
    await asyncio.wait_for(ready.wait(), 10)
    return runtime, adapter, status


async def run(settings: Settings, frames: list[Inbound], delivered: int, rx: RecorderClient,
              tune_gc: bool = True) -> dict[str, float]:
    conn = StandInConnection()
    runtime, adapter, status = await driven_adapter(settings, conn, tune_gc)
    rx.reset()
    conn.expect = len(frames)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(frames), 500):  # as the reader hands them over: batches, one loop turn each
        for msg in frames[i:i + 500]:
            adapter._on_message(msg)
        await asyncio.sleep(0)
    await asyncio.wait_for(conn.done.wait(), 300)
    acked_s = time.perf_counter() - t0
    for _ in range(6000):  # the recorder counts contacts in another process: polled, 300 s at most
        if rx.stats()["count"] >= delivered:
            break
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - t0
    status.cancel()
    await runtime.stop()
    got = rx.stats()["count"]
    return {"frames": len(frames), "acked_s": round(acked_s, 2), "wall_s": round(wall, 2), "contacts": got,
            "cpu_s": round(cpu, 2), "us_per_frame": round(1e6 * cpu / len(frames), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--storm", type=int, default=2000)
    ap.add_argument("--flood", type=int, default=20000)
    ap.add_argument("--default-gc", action="store_true", help="keep CPython's collector settings")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sosbridge-hotpath-"))
    rx = RecorderClient(work)
    storm = [frame(f"s{i}", i) for i in range(args.storm)]
    storm += [storm[i % args.storm] for i in range(10 * args.storm)]
    random.Random(9).shuffle(storm)
    try:
        for label, frames, ids, delivered in [
            ("a storm: first alerts and ten byte-identical copies of each, shuffled", storm,
             [f"s{i}" for i in range(args.storm)], args.storm),
            ("first alerts", [frame(f"h{i}", i) for i in range(args.n)], [f"h{i}" for i in range(args.n)], args.n),
            ("one flooder (bench/flooder.py: every frame has a new message id)",
             [frame("flooder", i, location_only=i % 2 == 1) for i in range(args.flood)], ["flooder"], 1),
            ("one flooder resending one fix without an id",
             [frame("stuck", i, location_only=i % 2 == 1, ids=False) for i in range(args.flood)], ["stuck"], 1),
        ]:
            db = work / f"{ids[0]}.db"
            settings = Settings(db=str(db), data_dir=str(work), platform_url=rx.url, http_port=0,
                                platform_secret="bench-secret-0123456789abcdef0123",
                                admin_token="bench-admin-0123456789abcdef")
            asyncio.run(seed(settings, ids))
            print(label, asyncio.run(run(settings, frames, delivered, rx, not args.default_gc)))
    finally:
        rx.close()


if __name__ == "__main__":
    main()
