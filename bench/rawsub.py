"""The subscribe-only baseline for latency: a paho subscriber that only stamps each message's receipt time.

It is the raw broker's share of every contender's latency (publish → broker → subscriber), with nothing
after it. The last topic level is the message key. It writes [[key, received_at], ...] to OUT_FILE once
EXPECTED messages arrived, or when it is stopped (SIGTERM), whichever comes first.
Usage: python -m bench.rawsub BROKER_PORT TOPIC_FILTER EXPECTED OUT_FILE
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    port, topic, expected, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    rows: list[tuple[str, float]] = []
    done = threading.Event()

    def on_connect(client: mqtt.Client, _ud: Any, _flags: Any, _rc: Any, _props: Any) -> None:
        client.subscribe(topic, qos=1)

    def on_subscribe(*_args: Any) -> None:
        print("rawsub subscribed", flush=True)

    def on_message(_c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        rows.append((msg.topic.rsplit("/", 1)[-1], time.time()))
        if len(rows) >= expected:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-rawsub", clean_session=True)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    client.loop_start()
    done.wait()
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(list(rows)))
    tmp.rename(out)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
