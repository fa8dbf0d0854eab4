"""The MQTT packet codec (device_adapters/mqtt/codec.py): byte layouts from the MQTT 3.1.1 and 5.0 specs
(OASIS), and a round trip through paho's own decoder for the packets the bridge sends."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_adapters.mqtt import codec


@pytest.mark.parametrize(("n", "raw"), [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"), (268_435_455, b"\xff\xff\xff\x7f"),
])
def test_variable_byte_integer_matches_the_spec_table(n: int, raw: bytes) -> None:
    """MQTT 5.0 §1.5.5, table 1-1: the edges of each length."""
    assert codec.varint(n) == raw
    assert codec.decode_varint(raw, 0) == (n, len(raw))


def test_frame_at_waits_for_a_whole_packet_and_rejects_a_five_byte_length() -> None:
    packet = codec.publish("a/b", b"x" * 200, qos=1, retain=False, mid=7, v5=False)
    for cut in range(len(packet)):
        assert codec.frame_at(packet[:cut], 0) is None
    assert codec.frame_at(packet + b"\xc0", 0) == (packet[0], 3, len(packet))  # 200+7 bytes: a 2-byte length
    with pytest.raises(codec.Malformed):
        codec.frame_at(b"\x30\xff\xff\xff\xff\x01", 0)


def test_connect_v311_bytes() -> None:
    """3.1.1 §3.1: protocol name, level 4, flags (user, password; clean session off), keepalive."""
    raw = codec.connect("sb", 30, v5=False, username="u", password="p")
    assert raw == (b"\x10\x14\x00\x04MQTT\x04\xc0\x00\x1e" + b"\x00\x02sb" + b"\x00\x01u" + b"\x00\x01p")


def test_connect_v5_keeps_the_session_and_sets_the_receive_maximum() -> None:
    raw = codec.connect("sosbridge", 30, v5=True, session_expiry=604_800, receive_maximum=1000)
    first, start, end = codec.frame_at(raw, 0) or (0, 0, 0)
    body = raw[start:end]
    assert first == 0x10 and body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] & 0x02 == 0  # clean start off
    props = codec.properties(body, 10)
    assert props == {codec.SESSION_EXPIRY: 604_800, codec.RECEIVE_MAXIMUM: 1000}
    # paho parses the same property block the same way.
    parsed = Properties(PacketTypes.CONNECT)
    parsed.unpack(body[10:])
    assert parsed.json() == {"SessionExpiryInterval": 604_800, "ReceiveMaximum": 1000}


@pytest.mark.parametrize("v5", [False, True])
@pytest.mark.parametrize(("qos", "retain", "dup"), [(0, False, False), (1, True, False), (1, False, True)])
def test_publish_round_trip(v5: bool, qos: int, retain: bool, dup: bool) -> None:
    raw = codec.publish("sosbridge/t/d/status", b'{"state":"received"}', qos=qos, retain=retain,
                        mid=513 if qos else 0, v5=v5, dup=dup)
    first, start, end = codec.frame_at(raw, 0) or (0, 0, 0)
    msg = codec.decode_publish(first, raw[start:end], v5=v5)
    assert msg == codec.Publish(b"sosbridge/t/d/status", b'{"state":"received"}', qos, retain, dup,
                                513 if qos else 0)


def test_publish_v5_properties_are_skipped() -> None:
    """A v5 PUBLISH from a broker may carry properties (message expiry, user properties)."""
    props = b"\x02\x00\x00\x00\x3c" + b"\x26\x00\x01k\x00\x01v"
    body = b"\x00\x03a/b" + b"\x00\x09" + codec.varint(len(props)) + props + b"payload"
    assert codec.decode_publish(0x32, body, v5=True) == codec.Publish(b"a/b", b"payload", 1, False, False, 9)


@pytest.mark.parametrize("body", [b"\x00", b"\x00\x03a/b\x00\x00x", b"\x00\x09a/b"])
def test_malformed_publish(body: bytes) -> None:
    with pytest.raises(codec.Malformed):
        codec.decode_publish(0x32, body, v5=False)


def test_qos_3_is_malformed() -> None:
    with pytest.raises(codec.Malformed):
        codec.decode_publish(0x36, b"\x00\x01a\x00\x01", v5=False)


def test_connack() -> None:
    assert codec.decode_connack(b"\x01\x00", v5=False) == codec.Connack(True, 0)
    assert codec.decode_connack(b"\x00\x05", v5=False) == codec.Connack(False, 5)  # not authorised
    props = b"\x21\x00\x14" + b"\x13\x00\x3c" + b"\x1f\x00\x02ok" + b"\x22\x00\x0a"
    v5 = codec.decode_connack(b"\x00\x00" + codec.varint(len(props)) + props, v5=True)
    assert v5 == codec.Connack(False, 0, receive_maximum=20, server_keepalive=60)
    assert codec.decode_connack(b"\x00\x87\x00", v5=True).reason == 0x87


def test_suback_and_puback() -> None:
    assert codec.decode_suback(b"\x00\x05\x01\x80", v5=False) == (5, [1, 0x80])
    assert codec.decode_suback(b"\x00\x05\x03\x1f\x00\x00\x01", v5=True) == (5, [1])
    assert codec.decode_puback(b"\x01\x02") == 258
    assert codec.decode_puback(b"\x01\x02\x10\x00") == 258  # v5: reason and properties after the id
    assert codec.puback(258) == b"\x40\x02\x01\x02"


def test_subscribe_bytes() -> None:
    assert codec.subscribe(10, ["a/+", "b/#"], v5=False) == b"\x82\x0e\x00\x0a\x00\x03a/+\x01\x00\x03b/#\x01"
    assert codec.subscribe(10, ["a/+"], v5=True) == b"\x82\x09\x00\x0a\x00\x00\x03a/+\x01"


def test_with_dup_marks_a_redelivery() -> None:
    raw = codec.publish("a", b"x", qos=1, retain=True, mid=1, v5=False)
    assert codec.with_dup(raw)[0] == raw[0] | 0x08 and codec.with_dup(raw)[1:] == raw[1:]


def test_unknown_property_is_malformed() -> None:
    with pytest.raises(codec.Malformed):
        codec.properties(b"\x02\x7f\x00", 0)
