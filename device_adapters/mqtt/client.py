"""paho-mqtt 2.x client run in its own network thread, handing messages to the asyncio loop.

Persistent session (clean start off, a stable client id, session expiry on v5) so messages published
while the bridge is down are queued by the broker; QoS 1 subscriptions; manual acknowledgement, so a
PUBACK goes out only when the adapter calls `ack()` after the pipeline has stored the alert. paho's
own loop reconnects with exponential backoff.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import threading
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
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 30,
        keepalive_s: int = 30,
    ) -> None:
        self.url = url
        # MQTT keepalive: with nothing received for this long paho sends PINGREQ and drops the link when no
        # PINGRESP comes within it again, so a silent broker link (black-holed, half-open) is seen in at
        # most twice this (docs/testing/fault-suite.md).
        self.keepalive_s = keepalive_s
        self.loop = loop
        # Messages handed to the event loop and not yet acknowledged. When all slots are taken, paho's
        # network thread waits here, stops reading the socket and the broker holds the rest: memory
        # stays bounded by this number, not by the size of a flood (MQTT v5's ReceiveMaximum does the
        # same at the protocol level; 3.1.1 brokers may be configured without an in-flight limit).
        self.slots = threading.BoundedSemaphore(MAX_PENDING)
        self._closing = False
        self.filters = [f"$share/{shared_group}/{f}" if shared_group else f for f in filters]
        self._on_message = on_message
        # Messages handed from paho's thread to the loop: one wake-up per batch, not one per message (the
        # loop's self-pipe write and the GIL switch per message showed up under a flood).
        self._inbox: collections.deque[Inbound] = collections.deque()
        self._inbox_lock = threading.Lock()
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        protocol = mqtt.MQTTv5 if url.mqtt5 else mqtt.MQTTv311
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if url.mqtt5 else False,
            protocol=protocol,
            manual_ack=True,
            reconnect_on_failure=True,
        )
        if url.username:
            self.client.username_pw_set(url.username, url.password)
        if url.tls:
            ctx = ssl.create_default_context(cafile=url.ca_file)
            if url.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.client.tls_set_context(ctx)
        self.client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        # Status publishes (QoS 1) drain faster with more in flight than paho's default of 20.
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._cb_connect
        self.client.on_disconnect = self._cb_disconnect
        self.client.on_subscribe = self._cb_subscribe
        self.client.on_message = self._cb_message

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        props = None
        if self.url.mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = RECEIVE_MAXIMUM
            self.client.connect_async(
                self.url.host, self.url.port, keepalive=self.keepalive_s, clean_start=False, properties=props
            )
        else:
            self.client.connect_async(self.url.host, self.url.port, keepalive=self.keepalive_s)
        self.client.loop_start()

    def release_slot(self) -> None:
        with contextlib.suppress(ValueError):
            self.slots.release()

    def stop(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()

    # -- called from the asyncio side --------------------------------------------------------------
    def ack(self, msg: Inbound) -> None:
        if msg.qos > 0:
            self.client.ack(msg.mid, msg.qos)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        if not self.client.is_connected():
            log.debug("publish dropped while disconnected", extra={"topic": topic})
            return
        self.client.publish(topic, payload, qos=qos, retain=retain)

    # -- paho callbacks (network thread) -----------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the event loop is closed: we are shutting down and the message stays unacknowledged

    def _cb_connect(self, client: mqtt.Client, _ud: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt connect refused", extra={"reason": str(reason), "broker": self.url.redacted()})
            return
        log.info(
            "mqtt connected",
            extra={"broker": self.url.redacted(), "session_present": bool(flags.session_present)},
        )
        self._call(self.connected.set)
        if self.url.mqtt5:
            client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.filters])
        else:
            client.subscribe([(f, 1) for f in self.filters])

    def _cb_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, codes: list[Any], _props: Any) -> None:
        failed = [str(c) for c in codes if c.is_failure]
        if failed:
            log.error("mqtt subscription refused", extra={"reasons": failed})
        self._call(self.subscribed.set)

    def _cb_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        log.warning("mqtt disconnected", extra={"reason": str(reason)})
        self._call(self.connected.clear)
        self._call(self.subscribed.clear)

    def _cb_message(self, _c: mqtt.Client, _ud: Any, m: mqtt.MQTTMessage) -> None:
        try:
            topic = m.topic
        except UnicodeDecodeError:
            # Invalid UTF-8 topic: nothing can route it; acknowledge so it cannot block the session.
            if m.qos > 0:
                self.client.ack(m.mid, m.qos)
            return
        msg = Inbound(topic, bytes(m.payload), m.qos, bool(m.retain), m.mid, bool(m.dup))
        while not self.slots.acquire(timeout=0.5):
            if self._closing:
                return  # not acknowledged: the broker redelivers it to the next session
        with self._inbox_lock:
            self._inbox.append(msg)
            wake = len(self._inbox) == 1
        if wake:
            self._call(self._drain_inbox)

    def _drain_inbox(self) -> None:
        """On the event loop: hand every message paho has buffered to the adapter, in order."""
        with self._inbox_lock:
            batch = list(self._inbox)
            self._inbox.clear()
        for msg in batch:
            self._on_message(msg)
