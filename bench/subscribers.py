"""Subscriber floor: how fast, and at what CPU cost, one MQTT client drains a backlog of QoS 1 frames with a
PUBACK per frame sent only after the frame was handled (here: `json.loads`), the bridge's contract. Issue 27
item 1.

Contenders: the bridge's own client (device_adapters/mqtt/client.py: asyncio.Protocol, read-ahead window,
PUBACKs batched per loop turn), paho 2.x as the bridge used it until issue 27 (its network thread, manual
ack, frames handed to the event loop in batches) and gmqtt (asyncio-native; `optimistic_acknowledgement`
off, so the PUBACK goes out when the async handler returns). N frames are queued at the broker for a
persistent session first, then the client connects and drains them; the figures are frames/s from CONNECT
to the last frame handled and CPU µs per frame (`process_time`, every thread of this process). Not part of
`bench/smoke`; gmqtt is optional (`pip install gmqtt`).

Usage: python -m bench.subscribers [--n 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import start_mosquitto
from bench.harness import stop_quietly
from bench.load import Publisher, button_alert
from device_adapters.mqtt.client import RECEIVE_MAXIMUM, Inbound, MqttConnection
from device_adapters.mqtt.url import parse_broker_url

FILTER = "sosbridge/+/+/alert"


def queue_backlog(port: int, n: int) -> None:
    pub = Publisher(port, inflight=1000)
    try:
        for i in range(n):
            msg = button_alert(f"d{i:06d}")
            pub.client.publish(msg.topic, msg.payload, qos=1)
        if not pub.wait_acked(n, timeout_s=300):
            raise RuntimeError(f"the broker took only {pub.acked} of {n} frames")
    finally:
        pub.close()


async def drained(subscribed: asyncio.Event, done: asyncio.Event, t0: float, connect_only: bool) -> float:
    """Seconds from `t0` until every frame was handled (0 once subscribed, with `connect_only`)."""
    if connect_only:
        await asyncio.wait_for(subscribed.wait(), 10)
        return 0.0
    await asyncio.wait_for(done.wait(), 300)
    return time.perf_counter() - t0


async def drain_bridge(port: int, client_id: str, n: int, connect_only: bool) -> float:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    handled = 0
    conn: MqttConnection

    def on_message(msg: Inbound) -> None:
        nonlocal handled
        json.loads(msg.payload)
        conn.ack(msg)
        conn.release_slot()
        handled += 1
        if handled >= n:
            done.set()

    conn = MqttConnection(parse_broker_url(f"mqtt://127.0.0.1:{port}"), client_id, [FILTER], loop, on_message)
    t0 = time.perf_counter()
    conn.start()
    try:
        return await drained(conn.subscribed, done, t0, connect_only)
    finally:
        await conn.stop()


async def drain_paho(port: int, client_id: str, n: int, connect_only: bool) -> float:
    """paho as the bridge ran it before issue 27: its network thread, a window of RECEIVE_MAXIMUM slots,
    frames handed to the loop in batches (one wake-up per batch), PUBACK from the loop (`client.ack`)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    loop = asyncio.get_running_loop()
    done, subscribed = asyncio.Event(), asyncio.Event()
    slots = threading.BoundedSemaphore(RECEIVE_MAXIMUM)
    inbox: collections.deque[mqtt.MQTTMessage] = collections.deque()
    lock = threading.Lock()
    handled = 0
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)

    def drain() -> None:
        nonlocal handled
        with lock:
            batch = list(inbox)
            inbox.clear()
        for m in batch:
            json.loads(m.payload)
            client.ack(m.mid, m.qos)
            slots.release()
            handled += 1
        if handled >= n:
            done.set()

    def on_message(_c: Any, _ud: Any, m: mqtt.MQTTMessage) -> None:
        slots.acquire()
        with lock:
            inbox.append(m)
            wake = len(inbox) == 1
        if wake:
            loop.call_soon_threadsafe(drain)

    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(FILTER, qos=1)

    def on_subscribe(*_a: Any) -> None:
        loop.call_soon_threadsafe(subscribed.set)

    client.on_subscribe = on_subscribe
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    t0 = time.perf_counter()
    client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
    client.loop_start()
    try:
        return await drained(subscribed, done, t0, connect_only)
    finally:
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)


async def drain_gmqtt(port: int, client_id: str, n: int, connect_only: bool) -> float:
    from gmqtt import Client  # optional

    done = asyncio.Event()
    subscribed = asyncio.Event()
    handled = 0

    async def on_message(_client: Any, _topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        nonlocal handled
        json.loads(payload)
        handled += 1
        if handled >= n:
            done.set()
        return 0  # the PUBACK goes out now, after the frame was handled

    def on_connect(client: Any, _flags: Any, _rc: Any, _props: Any) -> None:
        client.subscribe(FILTER, qos=1)

    client = Client(client_id, clean_session=False, optimistic_acknowledgement=False,
                    session_expiry_interval=3600, receive_maximum=RECEIVE_MAXIMUM)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    t0 = time.perf_counter()
    await client.connect("127.0.0.1", port, keepalive=30)
    try:
        return await drained(subscribed, done, t0, connect_only)
    finally:
        await asyncio.wait_for(client.disconnect(), 10)


Drain = Callable[[int, str, int, bool], Coroutine[Any, Any, float]]


def measure(drain: Drain, port: int, n: int) -> tuple[float, float]:
    """(frames/s, CPU µs per frame) of one drain of an n-frame backlog."""
    client_id = f"bench-sub-{uuid.uuid4().hex[:8]}"
    asyncio.run(drain(port, client_id, n, True))  # the persistent session and its subscription
    queue_backlog(port, n)
    cpu0 = time.process_time()
    took = asyncio.run(drain(port, client_id, n, False))
    return n / took, 1e6 * (time.process_time() - cpu0) / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    contenders: dict[str, Drain] = {"bridge client (asyncio.Protocol)": drain_bridge,
                                    "paho 2.x (network thread, manual ack)": drain_paho}
    try:
        import gmqtt  # noqa: F401

        contenders["gmqtt (asyncio)"] = drain_gmqtt
    except ImportError:
        print("gmqtt is not installed: measuring the bridge's client and paho only")
    workdir = Path(tempfile.mkdtemp(prefix="sosbridge-subs-"))
    broker, port = start_mosquitto(workdir, inflight=RECEIVE_MAXIMUM)
    try:
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for _ in range(args.runs):  # interleaved, so a change in the machine's load hits both alike
            for name, drain in contenders.items():
                rates[name].append(measure(drain, port, args.n))
        print(f"\n{args.n:,} QoS 1 frames queued, drained with a PUBACK after json.loads; median of {args.runs}\n")
        print("| subscriber | CPU µs/frame (median) | frames/s (median) | runs (frames/s, µs/frame) |")
        print("|---|---:|---:|---|")
        for name, rs in rates.items():
            runs = ", ".join(f"{r:,.0f} / {c:.0f}" for r, c in rs)
            print(f"| {name} | {statistics.median(c for _, c in rs):.0f} | "
                  f"{statistics.median(r for r, _ in rs):,.0f} | {runs} |")
        return 0
    finally:
        stop_quietly(broker)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
