"""The bridge's own MQTT session (device_adapters/mqtt/client.py + protocol.py) against a real Mosquitto,
and against a scripted broker on loopback for what Mosquitto will not do (an invalid UTF-8 topic, a
silent link): the read-ahead bound, no PUBACK before `ack()`, the persistent session, the keepalive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.infra.aio import wait_event
from device_adapters.mqtt import codec
from device_adapters.mqtt.client import MAX_PENDING, RECEIVE_MAXIMUM, SESSION_EXPIRY_S, Inbound, MqttConnection
from device_adapters.mqtt.mosquitto import MosquittoProcess
from device_adapters.mqtt.url import parse_broker_url
from simulator.devices.mqtt import MqttPublisher
from simulator.platform.pki import make_pki
from tests.support.factories import until
from tests.support.paths import need_binary


def _connection(url: str, client_id: str, on_message: Callable[[Inbound], None],
                keepalive_s: int = 30) -> MqttConnection:
    return MqttConnection(parse_broker_url(url), client_id, ["load/#"], asyncio.get_running_loop(), on_message,
                          reconnect_min_s=1, reconnect_max_s=1, keepalive_s=keepalive_s)


@contextlib.asynccontextmanager
async def running(conn: MqttConnection) -> AsyncIterator[MqttConnection]:
    conn.start()
    try:
        assert await wait_event(conn.subscribed, 10), "not subscribed"
        yield conn
    finally:
        await asyncio.wait_for(conn.stop(), 10)


@pytest.mark.timeout(120)
async def test_read_ahead_stops_at_the_window_until_messages_are_released() -> None:
    """5,000 QoS 1 messages from a broker with no in-flight limit (MQTT 3.1.1, max_inflight_messages 0):
    while nothing is acknowledged the bridge holds exactly MAX_PENDING and stops reading; the rest
    arrive, in order, as slots are released, and never more than MAX_PENDING are held at once."""
    need_binary("mosquitto")
    n = 5000
    with MosquittoProcess(options={"max_inflight_messages": "0", "max_queued_messages": "0"}) as broker:
        url = f"{broker.url}?version=3.1.1"
        held: list[Inbound] = []
        seen: list[int] = []
        outstanding = peak = 0
        releasing = False

        def settle(msg: Inbound) -> None:
            nonlocal outstanding
            conn.ack(msg)
            outstanding -= 1
            conn.release_slot()

        def on_message(msg: Inbound) -> None:
            nonlocal outstanding, peak
            outstanding += 1
            peak = max(peak, outstanding)
            seen.append(int(msg.payload))
            if releasing:
                asyncio.get_running_loop().call_soon(settle, msg)  # later, as the adapter does
            else:
                held.append(msg)

        conn = _connection(url, "bound-test", on_message)
        async with running(conn):
            msgs = [(f"load/{i % 50}", str(i).encode(), False) for i in range(n)]
            await asyncio.to_thread(MqttPublisher(url, client_id="bound-pub").publish_many, msgs)
            # Every message is with the broker, which sends without limit; the reader must stop itself.
            await until(lambda: conn.window.reader is not None and conn.window.reader.paused, 30)
            assert len(held) == MAX_PENDING
            await asyncio.sleep(0.5)  # the loop runs on; nothing more may be handed over
            assert len(held) == MAX_PENDING and conn.window.pending == MAX_PENDING
            releasing = True
            for msg in held:
                settle(msg)
            await until(lambda: len(seen) >= n, 60)
            assert seen == list(range(n))  # one publisher, in order, each once
            assert peak == MAX_PENDING


@pytest.mark.timeout(60)
async def test_no_puback_before_ack_and_the_session_redelivers(mosquitto_url: str) -> None:
    """Messages handed over but not acknowledged come again (DUP) to the next connection of the same
    client id; acknowledged ones never do. MQTT v5, the default."""
    first: list[Inbound] = []
    conn = _connection(mosquitto_url, "session-test", first.append)
    async with running(conn):
        await asyncio.to_thread(MqttPublisher(mosquitto_url, client_id="session-pub").publish_many,
                                [(f"load/s{i}", b"%d" % i, False) for i in range(6)])
        await until(lambda: len(first) == 6, 10)
        for msg in first[:3]:
            conn.ack(msg)
            conn.release_slot()
        await asyncio.sleep(0.2)  # the PUBACKs go out in the next loop turn; let the broker read them
    again: list[Inbound] = []
    async with running(_connection(mosquitto_url, "session-test", again.append)):
        await until(lambda: len(again) == 3, 10)
        await asyncio.sleep(0.3)
    assert [m.payload for m in again] == [b"3", b"4", b"5"]
    assert all(m.dup and m.qos == 1 for m in again)


@pytest.mark.timeout(60)
async def test_retained_qos1_publish_reaches_a_subscriber(mosquitto_url: str) -> None:
    """The status path: a retained QoS 1 publish, acknowledged by the broker and replayed to a new
    subscriber."""
    conn = _connection(mosquitto_url, "publish-test", lambda _m: None)
    async with running(conn):
        conn.publish("load/status/x", b'{"state":"received"}', qos=1, retain=True)
        await until(lambda: not conn._inflight, 10)  # PUBACKed by the broker
    got: list[Inbound] = []
    async with running(_connection(mosquitto_url, "publish-reader", got.append)):
        await until(lambda: len(got) == 1, 10)
    assert (got[0].topic, got[0].payload, got[0].retain) == ("load/status/x", b'{"state":"received"}', True)
    await MqttPublisher(mosquitto_url).apublish("load/status/x", b"", retain=True)  # clear it


@pytest.mark.timeout(60)
async def test_tls_with_a_private_ca_and_a_password(tmp_path: Path) -> None:
    """mqtts:// to Mosquitto's TLS listener: the broker's certificate checked against `ca=`, the user and
    password from the URL; a wrong password is refused and retried, never connected."""
    need_binary("mosquitto")
    pki = make_pki(tmp_path)
    tls = {"certfile": str(pki.server_cert), "keyfile": str(pki.server_key)}
    with MosquittoProcess(passwords={"bridge": "s3cret"}, options=tls) as broker:
        base = f"mqtts://bridge:{{}}@127.0.0.1:{broker.port}?ca={pki.ca}"
        got: list[Inbound] = []
        async with running(_connection(base.format("s3cret"), "tls-test", got.append)) as conn:
            conn.publish("load/tls", b"over tls", qos=1)
            await until(lambda: len(got) == 1, 10)
            assert got[0].payload == b"over tls"
        refused = _connection(base.format("wrong"), "tls-refused", got.append)
        refused.start()
        try:
            assert not await wait_event(refused.connected, 2)
        finally:
            await asyncio.wait_for(refused.stop(), 10)


# -- a scripted broker: one TCP listener on loopback speaking just enough MQTT ------------------------------
@dataclass
class Scripted:
    """Answers CONNECT and SUBSCRIBE, then does what the test says; records what the client sent."""

    answer_pings: bool = True
    connack: bytes = b"\x20\x02\x00\x00"  # accepted; b"\x20\x02\x00\x05" refuses (not authorised)
    connected_at: list[float] = field(default_factory=list)
    on_subscribed: list[bytes] = field(default_factory=list)  # raw packets to send after SUBACK
    # Raw packets written with the CONNACK, as a broker sends a persistent session's queued messages.
    with_connack: list[bytes] = field(default_factory=list)
    # Per connection (first, second, ...): packets after SUBACK instead, and whether to hang up after them.
    scripts: list[tuple[list[bytes], bool]] = field(default_factory=list)
    received: list[tuple[int, int, bytes]] = field(default_factory=list)  # (connection, kind, body)
    connections: int = 0
    port: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.connected_at.append(time.monotonic())
        index = self.connections
        packets, hang_up = self.scripts[index - 1] if index <= len(self.scripts) else (self.on_subscribed, False)
        buf = b""
        try:
            while data := await reader.read(65536):
                buf += data
                while (frame := codec.frame_at(buf, 0)) is not None:
                    first, start, end = frame
                    kind, body, buf = first >> 4, buf[start:end], buf[end:]
                    self.received.append((index, kind, body))
                    if kind == codec.CONNECT:
                        writer.write(self.connack + b"".join(self.with_connack))
                    elif kind == codec.SUBSCRIBE:
                        writer.write(b"\x90\x03" + body[:2] + b"\x01")
                        for packet in packets:
                            writer.write(packet)
                        if hang_up:
                            await writer.drain()
                            return
                    elif kind == codec.PINGREQ and self.answer_pings:
                        writer.write(b"\xd0\x00")
        finally:
            self.closed.set()
            writer.close()

    def kinds(self, kind: int, connection: int | None = None) -> list[bytes]:
        return [body for c, k, body in self.received if k == kind and connection in (None, c)]


@contextlib.asynccontextmanager
async def scripted(broker: Scripted) -> AsyncIterator[str]:
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    broker.port = server.sockets[0].getsockname()[1]
    try:
        yield f"mqtt://127.0.0.1:{broker.port}?version=3.1.1"
    finally:
        server.close()


def _raw_publish(topic: bytes, payload: bytes, mid: int) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + payload
    return b"\x32" + codec.varint(len(body)) + body


async def test_invalid_utf8_topic_is_acknowledged_and_dropped() -> None:
    broker = Scripted(on_subscribed=[_raw_publish(b"load/\xff\xfe", b"x", 7), _raw_publish(b"load/ok", b"y", 8)])
    got: list[Inbound] = []
    async with scripted(broker) as url, running(_connection(url, "utf8-test", got.append)) as conn:
        await until(lambda: len(got) == 1, 10)
        await until(lambda: broker.kinds(codec.PUBACK), 10)
        assert [(m.topic, m.payload, m.mid) for m in got] == [("load/ok", b"y", 8)]
        assert broker.kinds(codec.PUBACK) == [b"\x00\x07"]  # only the dropped one: 8 waits for ack()
        assert conn.window.pending == 1


async def test_an_ack_never_reaches_another_message_with_the_same_packet_id() -> None:
    """The link drops with message 5 unacknowledged; the broker redelivers it (DUP) on the next connection.
    Acknowledging the first copy sends nothing on the new connection (packet id 5 may by then name another
    message); acknowledging the redelivered copy sends the PUBACK."""
    first = _raw_publish(b"load/a", b"press", 5)
    broker = Scripted(scripts=[([first], True), ([bytes((first[0] | 0x08,)) + first[1:]], False)])
    got: list[Inbound] = []
    async with scripted(broker) as url, running(_connection(url, "reuse-test", got.append)) as conn:
        await until(lambda: len(got) == 2 and conn.subscribed.is_set(), 10)
        old, again = got
        assert (old.dup, again.dup, old.mid, again.mid) == (False, True, 5, 5)
        conn.ack(old)
        conn.release_slot()
        conn.ack(again)
        conn.release_slot()
        await until(lambda: broker.kinds(codec.PUBACK), 10)
        await asyncio.sleep(0.1)
        assert broker.kinds(codec.PUBACK, 2) == [b"\x00\x05"] and not broker.kinds(codec.PUBACK, 1)


async def test_queued_messages_read_with_the_connack_can_be_acknowledged_at_once() -> None:
    """A persistent session's queued messages arrive in the same read as the CONNACK, before the session has
    finished connecting. One acknowledged as it is handed over (as the adapter does a stored repeat) still
    gets its PUBACK: the broker would otherwise hold it in flight for the whole session, and a window of
    them stops the session (`bench.subscribers` stalled at 1,000 of a 2,000-frame backlog)."""
    queued = [_raw_publish(b"load/q", b"queued %d" % mid, mid) for mid in (1, 2, 3)]
    broker = Scripted(with_connack=queued)
    got: list[Inbound] = []
    conn: MqttConnection

    def at_once(msg: Inbound) -> None:
        got.append(msg)
        conn.ack(msg)
        conn.release_slot()

    async with scripted(broker) as url:
        conn = _connection(url, "connack-test", at_once)
        async with running(conn):
            await until(lambda: len(broker.kinds(codec.PUBACK)) == 3, 10)
    assert [m.mid for m in got] == [1, 2, 3]
    assert sorted(broker.kinds(codec.PUBACK)) == [b"\x00\x01", b"\x00\x02", b"\x00\x03"]


async def test_a_silent_broker_is_dropped_within_twice_the_keepalive() -> None:
    """A black-holed link (the broker stops answering PINGREQ): PINGREQ after half the keepalive, the link
    dropped and a new connection made, the old one seen dead well within 2x the keepalive."""
    broker = Scripted(answer_pings=False)
    async with scripted(broker) as url:
        conn = _connection(url, "keepalive-test", lambda _m: None, keepalive_s=2)
        async with running(conn):
            t0 = time.monotonic()
            assert await wait_event(broker.closed, 2 * 2 + 1), "the silent link was not dropped"
            took = time.monotonic() - t0
            assert broker.kinds(codec.PINGREQ), "no PINGREQ was sent"
            assert took <= 2 * 2 + 0.5, took
            await until(lambda: broker.connections == 2 and conn.subscribed.is_set(), 10)  # reconnected


async def test_a_refused_connect_backs_off_exponentially() -> None:
    """CONNACK "not authorised": tried again after 1 s, then 2 s, then 2 s (the maximum here), never
    connected, never spinning."""
    broker = Scripted(connack=b"\x20\x02\x00\x05")
    async with scripted(broker) as url:
        conn = MqttConnection(parse_broker_url(url), "refused-test", ["load/#"], asyncio.get_running_loop(),
                              lambda _m: None, reconnect_min_s=1, reconnect_max_s=2)
        conn.start()
        try:
            await until(lambda: broker.connections >= 4, 15)
            assert not conn.connected.is_set()
        finally:
            await asyncio.wait_for(conn.stop(), 10)
    gaps = [b - a for a, b in zip(broker.connected_at, broker.connected_at[1:], strict=False)]
    # Sleeps are lower bounds; the third gap shows the cap (an uncapped backoff would wait 4 s).
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and 1.9 <= gaps[2] < 3.9, gaps


async def test_connect_asks_for_a_persistent_session() -> None:
    """Clean start off with the client id and credentials from the URL; on v5 a session expiry and a
    Receive Maximum of MAX_PENDING."""
    broker = Scripted()
    async with scripted(broker) as url:
        v5_url = url.replace("mqtt://", "mqtt://user:s%40cret@").replace("?version=3.1.1", "")
        async with running(_connection(v5_url, "connect-test", lambda _m: None)):
            pass
    [body] = broker.kinds(codec.CONNECT)
    assert body[:7] == b"\x00\x04MQTT\x05" and body[7] == 0xC0  # user + password, clean start off
    props_len, pos = codec.decode_varint(body, 10)
    assert codec.properties(body, 10) == {codec.SESSION_EXPIRY: SESSION_EXPIRY_S,
                                          codec.RECEIVE_MAXIMUM: RECEIVE_MAXIMUM}
    payload = body[pos + props_len:]
    assert payload == b"\x00\x0cconnect-test" + b"\x00\x04user" + b"\x00\x06s@cret"
    assert broker.kinds(codec.DISCONNECT) == [b""]  # stop() says goodbye; the session stays
