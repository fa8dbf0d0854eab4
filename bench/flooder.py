"""Device A of the fairness run: one registered button flooding the bridge as fast as it can.

It alternates an SOS press with a new message id and a location update (the button's documented
`"action": "location"` frame), QoS 1, on its own connection, in its own process (so its publishing loop
does not share a GIL with the harness that stamps device B's send times). Bounded by DURATION_S and
MAX_FRAMES; at most WINDOW frames are ever waiting for the broker's PUBACK; RATE > 0 paces it at RATE
frames/s instead. Prints {"sent", "acked", "elapsed_s", "rate_per_s"} when done or stopped.
Usage: python -m bench.flooder BROKER_PORT TENANT DEVICE_ID DURATION_S MAX_FRAMES [WINDOW [RATE]]
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def frames(device_id: str, i: int) -> bytes:
    fix = {"lat": 51.5007 + (i % 100) * 1e-5, "lon": -0.1246, "accuracy_m": 8}
    if i % 2 == 0:
        return json.dumps({"kind": "sos", "message_id": f"a-{device_id}-{i}", "location": fix}).encode()
    return json.dumps({"action": "location", "message_id": f"a-{device_id}-{i}", "location": fix}).encode()


def main() -> None:
    port, tenant, device_id = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    duration_s, max_frames = float(sys.argv[4]), int(sys.argv[5])
    window = int(sys.argv[6]) if len(sys.argv) > 6 else 1000
    rate = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    topic = f"sosbridge/{tenant}/{device_id}/alert"
    stop = threading.Event()
    acked = 0
    lock = threading.Lock()

    def on_publish(*_args: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-flooder-{device_id}")
    client.max_inflight_messages_set(min(window, 1000))
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t0 = time.monotonic()
    end = t0 + duration_s
    sent = 0
    while sent < max_frames and not stop.is_set():
        now = time.monotonic()
        if now >= end:
            break
        if sent - acked >= window:
            time.sleep(0.001)
            continue
        if rate > 0 and t0 + sent / rate > now:
            time.sleep(min(0.01, t0 + sent / rate - now))
            continue
        client.publish(topic, frames(device_id, sent), qos=1)
        sent += 1
    elapsed = time.monotonic() - t0
    wait_until = time.monotonic() + 10
    while acked < sent and time.monotonic() < wait_until:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"sent": sent, "acked": acked, "elapsed_s": round(elapsed, 3),
                      "rate_per_s": round(sent / elapsed, 1) if elapsed > 0 else None}), flush=True)


if __name__ == "__main__":
    main()
