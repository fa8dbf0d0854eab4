"""The bridge's own MQTT session, asyncio-native: connect, subscribe, reconnect, keepalive, publish.

Persistent session (clean start off, a stable client id, session expiry and Receive Maximum on v5) so
messages published while the bridge is down are queued by the broker; QoS 1 subscriptions; a PUBACK goes
out only when the adapter calls `ack()` after the pipeline has stored the alert. At most MAX_PENDING
messages are handed over and not yet released (`release_slot()`); then reading stops (protocol.py).
Reconnects back off exponentially; a silent link is dropped within 1.75x the keepalive. QoS 1 publishes
are resent after a reconnect until the broker acknowledges them. docs/transports/mqtt.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from device_adapters.mqtt import codec
from device_adapters.mqtt.protocol import Inbound, MqttProtocol, ReadWindow
from device_adapters.mqtt.url import BrokerUrl

__all__ = ["MAX_PENDING", "RECEIVE_MAXIMUM", "Inbound", "MqttConnection"]

# Messages handed to the event loop and not yet acknowledged; the broker's window (Receive Maximum on
# v5, `max_inflight_messages` on Mosquitto) should match it. A window of 1,000 lets one group commit hold
# hundreds of alerts; smaller windows leave the CPU idle waiting for commits (issue 27: Mosquitto's default
# of 20 capped the bridge at 150-230 alerts/s). Memory bound: 1,000 frames of at most 16 KiB.
MAX_PENDING = 1000

log = logging.getLogger("sosbridge.mqtt")

SESSION_EXPIRY_S = 7 * 24 * 3600
RECEIVE_MAXIMUM = MAX_PENDING  # unacknowledged QoS 1 messages the broker may have in flight to us
CONNECT_TIMEOUT_S = 10.0  # TCP (+ TLS) connect and CONNACK
MAX_MID = 0xFFFF
MAX_QUEUED = 100_000  # our QoS 1 publishes waiting for room in flight (status is coalesced upstream)


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
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.url = url
        self.client_id = client_id
        # MQTT keepalive: a PINGREQ goes out after half of it without a byte in either direction, and the
        # link is dropped after 1.5x of it without a byte from the broker, so a silent broker link
        # (black-holed, half-open) is seen within 1.75x (docs/testing/fault-suite.md). While reading is
        # paused on purpose (the window is full) that clock stops.
        self.keepalive_s = keepalive_s
        self.loop = loop
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.filters = [f"$share/{shared_group}/{f}" if shared_group else f for f in filters]
        self._on_message = on_message
        self.window = ReadWindow(max_pending)
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._proto: MqttProtocol | None = None
        # The connection messages are read from: set before CONNACK, since a persistent session's queued
        # messages can come in the same read as the CONNACK and be acknowledged while handed over.
        self._reading: MqttProtocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._keepalive = keepalive_s  # ours, or the server's (v5 Server Keep Alive)
        self._last_ping = 0.0
        self._connack: asyncio.Future[codec.Connack] | None = None
        self._sub_mid = 0
        # QoS 1 publishes of ours: sent and not yet acknowledged (resent after a reconnect), then those
        # waiting for room under the server's Receive Maximum.
        self._inflight: dict[int, bytes] = {}
        self._outbox: collections.deque[tuple[str, bytes, bool]] = collections.deque()
        self._server_receive_max = 65_535
        self._next_mid = 0
        self._ssl = self._tls()  # built now: an unreadable CA file fails the adapter's start, not each attempt

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = self.loop.create_task(self._run(), name="mqtt-connection")

    async def stop(self) -> None:
        """DISCONNECT (the session stays at the broker) and close. Unacknowledged messages are redelivered
        to the next session."""
        self._closing = True
        proto = self._proto
        if proto is not None:
            proto.write(codec.DISCONNECT_PACKET)
            proto.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.lost), 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def release_slot(self) -> None:
        self.window.release()

    # -- called by the adapter -----------------------------------------------------------------------
    def ack(self, msg: Inbound) -> None:
        if msg.qos > 0 and self._reading is not None:
            self._reading.ack_message(msg)  # while disconnected: dropped, the broker redelivers it

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        proto = self._proto
        if proto is None:
            log.debug("publish dropped while disconnected", extra={"topic": topic})
            return
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        if not qos:
            proto.write(codec.publish(topic, data, qos=0, retain=retain, v5=self.url.mqtt5))
            return
        if len(self._outbox) >= MAX_QUEUED:
            log.warning("publish dropped: too many waiting for the broker", extra={"topic": topic})
            return
        self._outbox.append((topic, data, retain))
        self._fill()

    def subscribe(self, filters: list[str]) -> None:
        """Subscribe (QoS 1) to more filters on the current connection; not kept across reconnects."""
        if self._proto is not None:
            self._proto.write(codec.subscribe(self._new_sub_mid(), filters, v5=self.url.mqtt5))

    # -- the session ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = float(self.reconnect_min_s)
        while not self._closing:
            try:
                if await self._session():
                    delay = float(self.reconnect_min_s)
            except (OSError, TimeoutError, codec.Malformed) as exc:
                log.warning("mqtt connect failed", extra={"broker": self.url.redacted(), "error": repr(exc)})
            except Exception:  # a bug: logged, and the session is tried again rather than given up
                log.exception("mqtt session failed", extra={"broker": self.url.redacted()})
            finally:
                self._lost()
            if self._closing:
                return
            await asyncio.sleep(delay)  # a service loop's wait: stop() cancels it
            delay = min(delay * 2, float(self.reconnect_max_s))

    async def _session(self) -> bool:
        """One connection, until it is lost. True when the broker accepted it."""
        url = self.url
        self._connack = self.loop.create_future()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _transport, proto = await self.loop.create_connection(
                lambda: MqttProtocol(v5=url.mqtt5, window=self.window, on_message=self._on_message,
                                     on_control=self._control),
                url.host, url.port, ssl=self._ssl, server_hostname=url.host if url.tls else None,
            )
            self._reading = proto
            try:
                proto.write(codec.connect(
                    self.client_id, self.keepalive_s, v5=url.mqtt5, username=url.username, password=url.password,
                    session_expiry=SESSION_EXPIRY_S, receive_maximum=RECEIVE_MAXIMUM))
                connack = await self._wait_connack(proto)
            except BaseException:
                proto.abort()
                raise
        if connack.reason != 0:
            log.warning("mqtt connect refused", extra={"reason": connack.reason, "broker": url.redacted()})
            proto.abort()
            return False
        self._proto = proto
        self._keepalive = connack.server_keepalive or self.keepalive_s
        self._server_receive_max = min(max(1, connack.receive_maximum), MAX_MID - 2)
        log.info("mqtt connected", extra={"broker": url.redacted(), "session_present": connack.session_present})
        self.connected.set()
        proto.write(codec.subscribe(self._new_sub_mid(), self.filters, v5=url.mqtt5))
        self._resend()
        await self._watch(proto)
        return True

    async def _wait_connack(self, proto: MqttProtocol) -> codec.Connack:
        assert self._connack is not None
        waiters: set[asyncio.Future[Any]] = {self._connack, proto.lost}
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if self._connack in done:
            return self._connack.result()
        raise ConnectionResetError("the broker closed the connection before CONNACK")

    async def _watch(self, proto: MqttProtocol) -> None:
        """Until the link is lost: ping when quiet, drop the link when the broker is silent too long."""
        keepalive = self._keepalive
        tick = keepalive / 4 if keepalive else None
        while not proto.lost.done():
            await asyncio.wait({proto.lost}, timeout=tick)
            if not keepalive or proto.lost.done():
                continue
            now = time.monotonic()
            silent = proto.silent_for(now)
            if silent >= 1.5 * keepalive:
                log.warning("mqtt broker silent; dropping the link",
                            extra={"broker": self.url.redacted(), "silent_s": round(silent, 1)})
                proto.abort()
            elif (silent >= keepalive / 2 or now - proto.last_out >= keepalive / 2) and \
                    now - self._last_ping >= keepalive / 2:
                self._last_ping = now
                proto.write(codec.PINGREQ_PACKET)

    def _lost(self) -> None:
        was = self._proto is not None
        self._proto = None
        self._reading = None
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()
        if was:
            log.warning("mqtt disconnected", extra={"broker": self.url.redacted()})
        self.connected.clear()
        self.subscribed.clear()

    def _control(self, kind: int, body: bytes) -> None:
        v5 = self.url.mqtt5
        if kind == codec.PUBACK:
            self._inflight.pop(codec.decode_puback(body), None)
            self._fill()
        elif kind == codec.SUBACK:
            mid, codes = codec.decode_suback(body, v5=v5)
            failed = [c for c in codes if c >= 0x80]
            if failed:
                log.error("mqtt subscription refused", extra={"reasons": failed})
            if mid == self._sub_mid:
                self.subscribed.set()
        elif kind == codec.CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(codec.decode_connack(body, v5=v5))
        elif kind == codec.DISCONNECT:  # v5: the broker says why it closes
            log.warning("mqtt broker disconnected us", extra={"reason": body[0] if body else 0})
        elif kind != codec.PINGRESP:
            raise codec.Malformed(f"unexpected packet type {kind}")

    # -- our QoS 1 publishes ---------------------------------------------------------------------------
    def _resend(self) -> None:
        """After a reconnect: what the broker never acknowledged goes again (DUP), then the queue."""
        assert self._proto is not None
        for packet in self._inflight.values():
            self._proto.write(codec.with_dup(packet))
        self._fill()

    def _fill(self) -> None:
        """Send what waits, as far as the server's Receive Maximum allows."""
        proto = self._proto
        while proto is not None and self._outbox and len(self._inflight) < self._server_receive_max:
            topic, data, retain = self._outbox.popleft()
            mid = self._new_mid()
            packet = codec.publish(topic, data, qos=1, retain=retain, mid=mid, v5=self.url.mqtt5)
            self._inflight[mid] = packet
            proto.write(packet)

    def _new_mid(self) -> int:
        """A packet identifier not in flight (at most 65,534 are: the Receive Maximum caps it)."""
        while True:
            self._next_mid = self._next_mid % MAX_MID + 1
            if self._next_mid != self._sub_mid and self._next_mid not in self._inflight:
                return self._next_mid

    def _new_sub_mid(self) -> int:
        self._sub_mid = 0
        self._sub_mid = self._new_mid()
        return self._sub_mid

    def _tls(self) -> ssl.SSLContext | None:
        if not self.url.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.url.ca_file)
        if self.url.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx
