"""Load generators: QoS 1 MQTT publishers and HTTP wearables, bounded in count and time.

Each returns the wall-clock send time (time.time(), the clock the receiver stamps `received_at` with)
for every message key, so latency is receiver receipt minus device send on one machine's clock.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.seed import TENANT


@dataclass(frozen=True)
class Msg:
    key: str  # the device id the receiver will report for this message
    topic: str
    payload: bytes


def button_alert(device_id: str, message_id: str | None = None) -> Msg:
    """What our MQTT button firmware sends (hardware/profiles/sosbridge-mqtt-button.yaml)."""
    body = {
        "kind": "sos",
        "message_id": message_id or f"m-{device_id}",
        "location": {"lat": 51.5007, "lon": -0.1246, "accuracy_m": 8},
        "battery": 87,
    }
    return Msg(device_id, f"sosbridge/{TENANT}/{device_id}/alert", json.dumps(body).encode())


def ready_contact(template: dict[str, Any], key: str, topic: str) -> Msg:
    """A finished contact (as the bridge would have built it) for the relay contenders to carry."""
    doc = dict(template)
    doc["device"] = {**template["device"], "id": key}
    doc["contact_id"] = f"{key}:1"
    doc["alert_id"] = key
    return Msg(key, topic, json.dumps(doc).encode())


class Publisher:
    """One paho client with QoS 1; `inflight` unacknowledged messages at most (paho queues the rest)."""

    def __init__(self, port: int, inflight: int = 100) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(inflight)
        self.client.max_queued_messages_set(0)
        self.acked = 0
        self._lock = threading.Lock()
        self._sent_mids: list[tuple[int, str]] = []  # (mid, key) in publish order
        self._acked_mids: list[int] = []  # in the order the broker acknowledged them
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, *_args: Any) -> None:
        with self._lock:
            self.acked += 1
            self._acked_mids.append(mid)

    def acked_keys(self) -> set[str]:
        """The keys with at least one publish the broker acknowledged. paho's message ids wrap at 65,535, so
        each acknowledgement is matched to the oldest unmatched publish with its id."""
        waiting: dict[int, deque[str]] = {}
        for mid, key in self._sent_mids:
            waiting.setdefault(mid, deque()).append(key)
        with self._lock:
            acked = list(self._acked_mids)
        return {waiting[mid].popleft() for mid in acked if waiting.get(mid)}

    def send(
        self, msgs: Sequence[Msg], rate: float | None = None, deadline_s: float = 120.0,
        at: dict[float, Callable[[], None]] | None = None,
    ) -> dict[str, float]:
        """Publish all (as fast as paho takes them, or paced at `rate`/s); returns key -> first send time.
        `at` runs callbacks at the given offsets in seconds (the storm's probe SOS)."""
        sent: dict[str, float] = {}
        pending = sorted((at or {}).items())
        start = time.monotonic()
        stop = start + deadline_s
        for i, msg in enumerate(msgs):
            now = time.monotonic()
            while pending and now - start >= pending[0][0]:
                pending.pop(0)[1]()
            if rate is not None:
                due = start + i / rate
                if due > now:
                    time.sleep(due - now)
            if now > stop:
                break
            sent.setdefault(msg.key, time.time())
            info = self.client.publish(msg.topic, msg.payload, qos=1)
            while info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                # Every one of paho's 65,535 message ids is held by a frame the broker has not acknowledged
                # yet (a storm of 110,000 on a slow machine): paho refuses the frame rather than queue it, so
                # wait for acknowledgements. Before, those frames were silently never sent.
                time.sleep(0.001)
                info = self.client.publish(msg.topic, msg.payload, qos=1)
            self._sent_mids.append((info.mid, msg.key))
        for _, fn in pending:
            fn()
        return sent

    def wait_acked(self, n: int, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.acked >= n:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
