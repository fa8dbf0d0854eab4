"""The thin relay: a minimal paho subscriber that signs each message and POSTs it to the receiver.

No validation, no persistence, no registry: the ceiling for Python glue between a broker and a webhook.
paho's network thread hands each message to a queue; WORKERS threads, each with one keep-alive
`http.client` connection, POST it and then acknowledge it (manual PUBACK after the POST returns, so the
relay acknowledges no later and no earlier than a bridge without storage would).
Usage: python -m bench.relay BROKER_PORT RECEIVER_URL SECRET TOPIC_FILTER [WORKERS]
"""

from __future__ import annotations

import http.client
import queue
import signal
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bridge.delivery.sinks.signing import SIGNATURE_HEADER, sign

WORKERS = 4


def main() -> None:
    port, url, secret, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    workers = int(sys.argv[5]) if len(sys.argv) > 5 else WORKERS
    target = urlsplit(url)
    host, http_port, path = target.hostname or "127.0.0.1", target.port or 80, target.path or "/"
    done = threading.Event()
    inbox: queue.Queue[tuple[int, int, bytes] | None] = queue.Queue()

    def on_connect(client: mqtt.Client, _ud: Any, _flags: Any, _rc: Any, _props: Any) -> None:
        client.subscribe(topic, qos=1)

    def on_subscribe(*_args: Any) -> None:
        print("relay subscribed", flush=True)

    def on_message(_c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        inbox.put((msg.mid, msg.qos, bytes(msg.payload)))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-relay", clean_session=True,
                         manual_ack=True)

    def worker() -> None:
        conn = http.client.HTTPConnection(host, http_port, timeout=10)
        while True:
            item = inbox.get()
            if item is None:
                break
            mid, qos, body = item
            key = f"relay-{mid}"  # like the bridge, an idempotency key covered by the signature
            headers = {"Content-Type": "application/json", "Idempotency-Key": key,
                       SIGNATURE_HEADER: sign(body, secret, key)}
            for attempt in (1, 2):  # one reconnect when a kept-alive connection was closed under us
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    conn.getresponse().read()
                    break
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection(host, http_port, timeout=10)
                    if attempt == 2:
                        print(f"relay post failed: {exc!r}", flush=True)
            if qos:
                client.ack(mid, qos)
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    client.loop_start()
    done.wait()
    client.disconnect()
    client.loop_stop()
    for _ in threads:
        inbox.put(None)
    for t in threads:
        t.join(timeout=5)


if __name__ == "__main__":
    main()
