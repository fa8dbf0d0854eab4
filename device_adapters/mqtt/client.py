"""paho-mqtt 2.x client driven by the asyncio loop itself (paho's external-loop API), no network thread.

Persistent session (clean start off, a stable client id, session expiry on v5) so messages published
while the bridge is down are queued by the broker; QoS 1 subscriptions; manual acknowledgement, so a
PUBACK goes out only when the adapter calls `ack()` after the pipeline has stored the alert. paho's
socket is watched with the loop's add_reader/add_writer and reconnected with exponential backoff here.

Why not paho's own thread (issue 27): under a flood its network thread and the event loop took turns on
the GIL for every packet (a hand-off, a lock and a loop wake-up per batch, PUBACKs waiting for the thread's
next turn); reading on the loop removes the thread, the hand-off and their system calls. Memory stays
bounded the same way: past MAX_PENDING unacknowledged messages the loop stops reading the socket and the
broker holds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from device_adapters.mqtt.url import BrokerUrl

# Messages handed to the event loop and not yet acknowledged; the broker's window (Receive Maximum on
# v5, `max_inflight_messages` on Mosquitto) should match it. A window of 1,000 lets one group commit hold
# hundreds of alerts; smaller windows leave the CPU idle waiting for commits (issue 27: Mosquitto's default
# of 20 capped the bridge at 150-230 alerts/s). Memory bound: 1,000 frames of at most 16 KiB.
MAX_PENDING = 1000

log = logging.getLogger("sosbridge.mqtt")

SESSION_EXPIRY_S = 7 * 24 * 3600
RECEIVE_MAXIMUM = MAX_PENDING  # unacknowledged QoS 1 messages the broker may have in flight to us


@dataclass(frozen=True)
class Inbound:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    dup: bool


class MqttConnection:
    def __init__(
        self,
        url: BrokerUrl,
        client_id: str,
        filters: list[str],
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Inbound], None],
        shared_group: str | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        keepalive_s: int = 30,
    ) -> None:
        self.url = url
        self.loop = loop
        self.keepalive_s = keepalive_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        # Messages handed to the adapter and not yet acknowledged (release_slot). At MAX_PENDING the loop
        # stops reading the socket until slots free up.
        self.pending = 0
        self._closing = False
        self.filters = [f"$share/{shared_group}/{f}" if shared_group else f for f in filters]
        self._on_message = on_message
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._lost = asyncio.Event()  # the socket closed: the connect loop opens a new one
        self._sock: Any = None
        self._reading = False
        self._writing = False
        self._tasks: list[asyncio.Task[None]] = []
        protocol = mqtt.MQTTv5 if url.mqtt5 else mqtt.MQTTv311
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if url.mqtt5 else False,
            protocol=protocol,
            manual_ack=True,
            reconnect_on_failure=False,  # the connect loop below reconnects
        )
        if url.username:
            self.client.username_pw_set(url.username, url.password)
        if url.tls:
            ctx = ssl.create_default_context(cafile=url.ca_file)
            if url.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.client.tls_set_context(ctx)
        # Status publishes (QoS 1) drain faster with more in flight than paho's default of 20.
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._cb_connect
        self.client.on_disconnect = self._cb_disconnect
        self.client.on_subscribe = self._cb_subscribe
        self.client.on_message = self._cb_message
        self.client.on_socket_open = self._cb_socket_open
        self.client.on_socket_close = self._cb_socket_close
        self.client.on_socket_register_write = self._cb_register_write
        self.client.on_socket_unregister_write = self._cb_unregister_write

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """On the event loop: connect (and reconnect) in the background; `subscribed` says when ready."""
        self._tasks = [self.loop.create_task(self._connect_loop(), name="mqtt-connect"),
                       self.loop.create_task(self._misc_loop(), name="mqtt-keepalive")]

    def release_slot(self) -> None:
        self.pending = max(0, self.pending - 1)
        if not self._reading and self.pending < MAX_PENDING and self._sock is not None:
            self._watch_read()

    def stop(self) -> None:
        """From any thread but the loop's (the adapters call it with asyncio.to_thread): disconnect and
        wait, at most 5 s, until the loop has closed the socket."""
        future = asyncio.run_coroutine_threadsafe(self.aclose(), self.loop)
        with contextlib.suppress(Exception):
            future.result(timeout=5)

    async def aclose(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._sock is not None:
            self.client.disconnect()  # queues DISCONNECT; paho closes the socket once it is written
            with contextlib.suppress(Exception):
                self.client.loop_write()
        self._unwatch()
        with contextlib.suppress(Exception):
            await asyncio.wait(self._tasks, timeout=1)
        self._sock = None

    async def _connect_loop(self) -> None:
        delay = self.reconnect_min_s
        while not self._closing:
            self._lost.clear()
            try:
                # A blocking TCP (and TLS) connect: in a worker thread, so a slow broker never stalls the loop.
                await self.loop.run_in_executor(None, self._connect_blocking)
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.warning("mqtt connect failed", extra={"broker": self.url.redacted(), "error": str(exc)[:200]})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            delay = self.reconnect_min_s
            await self._lost.wait()  # a service loop's wait: aclose() cancels it
            if not self._closing:
                await asyncio.sleep(self.reconnect_min_s)

    def _connect_blocking(self) -> None:
        if self.url.mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = RECEIVE_MAXIMUM
            self.client.connect(self.url.host, self.url.port, keepalive=self.keepalive_s, clean_start=False,
                                properties=props)
        else:
            self.client.connect(self.url.host, self.url.port, keepalive=self.keepalive_s)

    async def _misc_loop(self) -> None:
        while True:  # keepalive: PINGREQ when idle, drop a link whose PINGRESP never came
            await asyncio.sleep(1.0)
            if self._sock is not None:
                self.client.loop_misc()

    # -- the socket, on the loop -------------------------------------------------------------------
    def _cb_socket_open(self, _c: mqtt.Client, _ud: Any, sock: Any) -> None:
        self.loop.call_soon_threadsafe(self._opened, sock)  # called in the connect thread

    def _opened(self, sock: Any) -> None:
        self._sock = sock
        if self.pending < MAX_PENDING:
            self._watch_read()
        if self.client.want_write():
            self._watch_write()

    def _cb_socket_close(self, _c: mqtt.Client, _ud: Any, sock: Any) -> None:
        self._call(lambda: self._closed(sock))

    def _closed(self, sock: Any) -> None:
        if self._sock is not None and sock is not self._sock:
            return  # an older socket closing late: the current one is fine
        self._unwatch()
        self._sock = None
        self.connected.clear()
        self.subscribed.clear()
        self._lost.set()

    def _cb_register_write(self, _c: mqtt.Client, _ud: Any, _sock: Any) -> None:
        self._call(self._watch_write)

    def _cb_unregister_write(self, _c: mqtt.Client, _ud: Any, _sock: Any) -> None:
        self._call(self._unwatch_write)

    def _call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop: now when already there, else queued (paho calls from the connect thread)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            fn()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            self.loop.call_soon_threadsafe(fn)

    def _watch_read(self) -> None:
        if self._sock is not None and not self._reading:
            self.loop.add_reader(self._sock, self._on_readable)
            self._reading = True

    def _watch_write(self) -> None:
        if self._sock is not None and not self._writing:
            self.loop.add_writer(self._sock, self._on_writable)
            self._writing = True

    def _unwatch_write(self) -> None:
        if self._writing and self._sock is not None:
            self.loop.remove_writer(self._sock)
        self._writing = False

    def _unwatch(self) -> None:
        if self._sock is not None:
            if self._reading:
                self.loop.remove_reader(self._sock)
            if self._writing:
                self.loop.remove_writer(self._sock)
        self._reading = self._writing = False

    def _on_readable(self) -> None:
        self.client.loop_read()
        # TLS: bytes already decrypted in the SSL object wake no reader; read them now.
        sock = self._sock
        while sock is not None and self._reading and getattr(sock, "pending", lambda: 0)() > 0:
            self.client.loop_read()
            sock = self._sock
        if self.client.want_write():
            self.client.loop_write()  # PUBACKs and publishes queued while reading go out at once

    def _on_writable(self) -> None:
        self.client.loop_write()

    # -- called from the asyncio side --------------------------------------------------------------
    def ack(self, msg: Inbound) -> None:
        if msg.qos > 0:
            self.client.ack(msg.mid, msg.qos)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        if not self.client.is_connected():
            log.debug("publish dropped while disconnected", extra={"topic": topic})
            return
        self.client.publish(topic, payload, qos=qos, retain=retain)

    # -- paho callbacks (on the loop; on_connect after CONNACK, read on the loop) ---------------------
    def _cb_connect(self, client: mqtt.Client, _ud: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt connect refused", extra={"reason": str(reason), "broker": self.url.redacted()})
            return
        log.info(
            "mqtt connected",
            extra={"broker": self.url.redacted(), "session_present": bool(flags.session_present)},
        )
        self.connected.set()
        if self.url.mqtt5:
            client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.filters])
        else:
            client.subscribe([(f, 1) for f in self.filters])

    def _cb_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, codes: list[Any], _props: Any) -> None:
        failed = [str(c) for c in codes if c.is_failure]
        if failed:
            log.error("mqtt subscription refused", extra={"reasons": failed})
        self.subscribed.set()

    def _cb_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        # paho closes the socket with it (on_socket_close): the connect loop opens a new one.
        log.warning("mqtt disconnected", extra={"reason": str(reason)})

    def _cb_message(self, _c: mqtt.Client, _ud: Any, m: mqtt.MQTTMessage) -> None:
        try:
            topic = m.topic
        except UnicodeDecodeError:
            # Invalid UTF-8 topic: nothing can route it; acknowledge so it cannot block the session.
            if m.qos > 0:
                self.client.ack(m.mid, m.qos)
            return
        if self._closing:
            return  # not acknowledged: the broker redelivers it to the next session
        self.pending += 1
        if self.pending >= MAX_PENDING and self._reading and self._sock is not None:
            self.loop.remove_reader(self._sock)  # the broker holds the rest until slots free up
            self._reading = False
        self._on_message(Inbound(topic, bytes(m.payload), m.qos, bool(m.retain), m.mid, bool(m.dup)))
