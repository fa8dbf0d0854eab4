"""The thin relay: a minimal paho subscriber that signs each message and POSTs it to the receiver.

No validation, no persistence, no registry: the ceiling for Python glue between a broker and a
webhook. It acknowledges (paho's automatic PUBACK) after the POST returns, one message at a time.
Usage: python -m bench.relay BROKER_PORT RECEIVER_URL SECRET TOPIC_FILTER
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bridge.sinks.signing import SIGNATURE_HEADER, sign


def main() -> None:
    port, url, secret, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    http = httpx.Client(timeout=10.0)
    done = threading.Event()

    def on_connect(client: mqtt.Client, _ud: Any, _flags: Any, _rc: Any, _props: Any) -> None:
        client.subscribe(topic, qos=1)

    def on_subscribe(*_args: Any) -> None:
        print("relay subscribed", flush=True)

    def on_message(_c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        body = bytes(msg.payload)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret)}
        try:
            http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            print(f"relay post failed: {exc!r}", flush=True)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-relay", clean_session=True)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    client.loop_start()
    done.wait()
    client.disconnect()
    client.loop_stop()
    http.close()


if __name__ == "__main__":
    main()
