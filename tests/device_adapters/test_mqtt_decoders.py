"""Pure tests of the MQTT decoders, LoRaWAN codecs, topic routing and limits.

Test vectors are the genuine samples from each ecosystem's documentation and tests (each cited where used; the
profile samples in hardware/profiles/ cite theirs in their `source` field).
"""

from __future__ import annotations

import base64
import json

import pytest

from bridge.devices.decoding import DecodeError, Frame, get_decoder
from bridge.devices.profiles import ProfileRegistry
from bridge.devices.samples import check_profile
from device_adapters.decoders import chirpstack, hermes, lorawan, lorawan_codecs, ttn, zigbee2mqtt
from device_adapters.mqtt import topics
from device_adapters.mqtt.limits import FloodGuard
from device_adapters.mqtt.url import parse_broker_url

MQTT_PROFILES = [
    "sosbridge-mqtt-button",
    "zigbee2mqtt-tuya-ts0215a-sos",
    "zigbee2mqtt-tuya-ts0601-sos",
    "zigbee2mqtt-feibit-seb01zb",
    "zigbee2mqtt-heiman-hs1eb",
    "zigbee2mqtt-aqara-wxkg11lm",
    "lorawan-milesight-ws101",
    "lorawan-dragino-lgt92",
    "owntracks-phone",
    "rhasspy-hermes-satellite",
]
REGISTRY = ProfileRegistry.load()


@pytest.mark.parametrize("profile_id", MQTT_PROFILES)
def test_profile_samples(profile_id: str) -> None:
    profile = REGISTRY.get(profile_id)
    assert profile is not None, f"{profile_id} did not load"
    assert profile.samples
    failures = [r for r in check_profile(profile) if not r.ok]
    assert not failures, [(r.sample, r.error, r.actual, r.expected) for r in failures]


def test_decoders_are_registered_entry_points() -> None:
    for name in ("zigbee2mqtt", "lorawan", "chirpstack", "ttn", "owntracks", "hermes"):
        assert callable(get_decoder(name))


# -- LoRaWAN codecs: the vendor codec examples (TheThingsNetwork/lorawan-devices) --------
def test_ws101_codec_example() -> None:
    # ws101-codec.yaml: input {fPort: 85, bytes: [0xFF, 0x2E, 0x01]} -> output {button: short}
    assert lorawan_codecs.milesight_ws101(bytes([0xFF, 0x2E, 0x01]), 85) == {"button": "short"}
    assert lorawan_codecs.milesight_ws101(bytes([0x01, 0x75, 0x64, 0xFF, 0x2E, 0x03]), 85) == {
        "battery": 100,
        "button": "double",
    }


def test_lgt92_codec_example() -> None:
    # lgt92-codec.yaml example bytes; expected output copied from that example (MD differs, see below).
    raw = bytes([0x01, 0x5A, 0x78, 0x54, 0x06, 0xCF, 0x33, 0xD8, 0x0D, 0x20, 0x60, 0x00, 0x4B, 0x01, 0x90, 0x00])
    out = lorawan_codecs.dragino_lgt92(raw, 2)
    assert out["latitude"] == pytest.approx(22.70626)
    assert out["longitude"] == pytest.approx(114.24252)
    assert out["ALARM_status"] == "FALSE"
    assert out["BatV"] == pytest.approx(3.36)
    assert out["FW"] == 160 and out["LON"] == "ON"
    assert out["Roll"] == pytest.approx(0.75) and out["Pitch"] == pytest.approx(4)
    assert out["hdop"] == 0
    # The upstream JS reports MD "Disable" for every frame (operator precedence bug); 0x60 & 0xC0 = Move.
    assert out["MD"] == "Move"
    alarm = bytearray(raw)
    alarm[8] |= 0x40
    assert lorawan_codecs.dragino_lgt92(bytes(alarm), 2)["ALARM_status"] == "TRUE"
    southern = bytearray(raw)
    southern[0:4] = (-33868800).to_bytes(4, "big", signed=True)
    assert lorawan_codecs.dragino_lgt92(bytes(southern), 2)["latitude"] == pytest.approx(-33.8688)
    with pytest.raises(DecodeError):
        lorawan_codecs.dragino_lgt92(raw[:5], 2)


# -- envelopes: the upstream examples (ChirpStack docs events.md, TTN MQTT docs) -----------
CHIRPSTACK_UP = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:34:15.775023242+00:00",
    "deviceInfo": {"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "devEui": "0101010101010101"},
    "devAddr": "00189440",
    "dr": 1,
    "fPort": 1,
    "data": "qg==",
}
TTN_UP = {
    "end_device_ids": {"device_id": "dev1", "application_ids": {"application_id": "app1"},
                       "dev_eui": "4200000000000000", "join_eui": "4200000000000000", "dev_addr": "01DA1F15"},
    "correlation_ids": ["gs:conn:01D2CSNX7FJVKQPCVG612QF1TX", "as:up:01D2CV8HNGJ57G25BW0FCZNY07"],
    "uplink_message": {"session_key_id": "AWiZpAyXrAfEkUNkBljRoA==", "f_port": 15,
                       "frm_payload": "VGVtcGVyYXR1cmUgPSAwLjA="},
}


def test_chirpstack_envelope_docs_sample() -> None:
    up = chirpstack.parse_uplink(CHIRPSTACK_UP)
    assert up.payload == b"\xaa" and up.f_port == 1 and up.dev_eui == "0101010101010101"
    assert up.message_id == "3ac7e3c4-4401-4b8d-9386-a5c902f9202d"
    assert up.time is not None and up.time.microsecond == 775023  # nanoseconds truncated, not rejected
    assert up.decoded is None


def test_chirpstack_status_event_without_payload() -> None:
    # ChirpStack docs events.md (status event: margin, batteryLevel)
    doc = {"deduplicationId": "bf2a9746-1c8b-49be-a92e-f0b89c8534e4", "time": "2022-07-18T09:35:06.927172638+00:00",
           "deviceInfo": {"devEui": "0101010101010101"}, "margin": 10, "batteryLevel": 88.3}
    up = chirpstack.parse_uplink(doc, "status")
    assert up.payload is None and up.f_port is None


def test_chirpstack_v3_is_refused() -> None:
    doc = {"applicationID": "123", "devEUI": "AgICAgICAgI=", "data": "qg==", "objectJSON": "{}"}
    with pytest.raises(DecodeError, match="v3"):
        chirpstack.parse_uplink(doc)


def test_chirpstack_bad_base64_is_refused() -> None:
    with pytest.raises(DecodeError, match="base64"):
        chirpstack.parse_uplink({**CHIRPSTACK_UP, "data": "not base64!"})


def test_ttn_envelope_docs_sample() -> None:
    up = ttn.parse_uplink(TTN_UP)
    assert up.payload == b"Temperature = 0.0"
    assert up.f_port == 15 and up.dev_eui == "4200000000000000"
    assert up.message_id == "as:up:01D2CV8HNGJ57G25BW0FCZNY07"
    assert up.registry_location is None


def test_lorawan_decoder_leaves_a_docs_uplink_alone() -> None:
    profile = REGISTRY.get("lorawan-milesight-ws101")
    assert profile is not None
    frame = Frame(payload=json.dumps(TTN_UP).encode(), meta={"network": "ttn"})
    # Not a press, and not silently nothing either: the ingress reports it as unmatched.
    assert [e.action for e in lorawan.decode_uplink(frame, profile)] == ["unmatched"]


# -- zigbee2mqtt -------------------------------------------------------------------------------------------
def test_z2m_availability_both_forms() -> None:
    # zigbee2mqtt test/availability.test.ts and the legacy 1.x plain strings
    assert zigbee2mqtt.parse_availability(b'{"state":"offline"}') == "offline"
    assert zigbee2mqtt.parse_availability(b'{"state":"online"}') == "online"
    assert zigbee2mqtt.parse_availability(b"offline") == "offline"
    assert zigbee2mqtt.parse_availability(b"gibberish") is None


def test_z2m_endpoint_suffix_and_epoch_last_seen() -> None:
    profile = REGISTRY.get("zigbee2mqtt-heiman-hs1eb")
    assert profile is not None
    frame = Frame(payload=b'{"action":"hold_left","last_seen":1776440002000}', meta={"topic": "zigbee2mqtt/x"})
    [event] = zigbee2mqtt.decode(frame, profile)
    assert event.kind is not None and event.kind.value == "sos"
    assert event.occurred_at is not None and event.occurred_at.year == 2026


# -- Hermes ------------------------------------------------------------------------------------------------
def test_hermes_old_snips_probability() -> None:
    doc = {"intent": {"intentName": "CallForHelp", "probability": 0.3}, "siteId": "hall"}
    assert hermes.confidence(doc) == 0.3
    profile = REGISTRY.get("rhasspy-hermes-satellite")
    assert profile is not None
    assert hermes.decode(Frame(payload=json.dumps(doc).encode()), profile) == []  # below min_confidence


# -- routing, limits, URLs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("topic", "kind", "scheme", "value"),
    [
        ("sosbridge/acme/btn-1/alert", "own", None, None),
        ("zigbee2mqtt/0x847127fffe0542eb", "z2m", "z2m", "0x847127fffe0542eb"),
        ("zigbee2mqtt/remote/availability", "z2m", "z2m", "remote"),
        ("zigbee2mqtt/bridge/state", "z2m_bridge", None, "zigbee2mqtt"),
        ("application/00000000-0000-0000-0000-000000000000/device/0102030405060708/event/up",
         "chirpstack", "deveui", "0102030405060708"),
        ("v3/app1@tenant1/devices/dev1/up", "ttn", "ttn", "app1/dev1"),
        ("owntracks/jane/nokia", "owntracks", "owntracks", "jane/nokia"),
        ("owntracks/jane/nokia/event", "owntracks", "owntracks", "jane/nokia"),
        ("hermes/intent/hipitihop:snipsHotword", "hermes", "hermes_site", None),
    ],
)
def test_routes(topic: str, kind: str, scheme: str | None, value: str | None) -> None:
    r = topics.route(topic)
    assert r is not None and r.kind == kind and r.scheme == scheme and r.value == value


@pytest.mark.parametrize(
    "topic", ["zigbee2mqtt/bridge/event", "zigbee2mqtt/lamp/set", "sosbridge/acme/btn-1/status", "other/x"]
)
def test_routes_ignored(topic: str) -> None:
    assert topics.route(topic) is None


def test_flood_guard_refills() -> None:
    guard = FloodGuard(burst=3, rate_per_s=1)
    assert [guard.allow("k", 0.0) for _ in range(4)] == [True, True, True, False]
    assert guard.allow("other", 0.0)
    assert guard.allow("k", 1.0) and not guard.allow("k", 1.0)


def test_broker_url() -> None:
    u = parse_broker_url("mqtts://bridge:s%40cret@broker.example:8884?version=3.1.1")
    assert (u.host, u.port, u.tls, u.username, u.password, u.mqtt5) == (
        "broker.example", 8884, True, "bridge", "s@cret", False)
    assert "s@cret" not in u.redacted()
    assert parse_broker_url("mqtt://127.0.0.1").port == 1883
    with pytest.raises(ValueError):
        parse_broker_url("http://x")


def test_base64_samples_in_notes_match_bytes() -> None:
    # The profiles give derived base64 for the codec examples; check them against the bytes.
    assert base64.b64decode("/y4B") == bytes([0xFF, 0x2E, 0x01])
    assert base64.b64decode("AVp4VAbPM9gNIGAASwGQAA==")[8] == 0x0D
