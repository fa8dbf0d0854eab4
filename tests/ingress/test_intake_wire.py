"""The intake channel's wire (bridge/ingress/wire.py): what crosses comes out as it went in, through marshal
and the framing, and a sender always lands on the same intake process."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.alerts.pipeline import SubmitResult
from bridge.core.events import StatusEvent, TextMessage
from bridge.core.model import AlertState, Device, Location
from bridge.devices.frames import Frame
from bridge.devices.profiles import ProfileRegistry
from bridge.infra.channel import pack, split_frames, unpack
from bridge.ingress.binding import Claim
from bridge.ingress.receipt import Receipt
from bridge.ingress.wire import (
    BATCH,
    EVENT,
    RECEIVE,
    Reader,
    batch_request,
    claim_fields,
    claim_from,
    dispatch_key,
    event_fields,
    frame_fields,
    frame_from,
    receipt_fields,
    receive_request,
    request_key,
)

PROFILES = ProfileRegistry.load()
DEVICE = Device(device_id="btn-1", tenant_id="t1", profile_id="sosbridge-json", label="hall button",
                identifiers={"deveui": "0011223344556677"},
                last_location=Location(lat=55.95, lon=-3.19, accuracy_m=12.0),
                last_seen=datetime(2026, 12, 7, 22, 0, tzinfo=UTC))


def through_the_wire(value: object) -> object:
    [body] = split_frames(bytearray(pack(value)))
    return unpack(body)


def test_a_frame_and_its_claim_cross_unchanged() -> None:
    frame = Frame(payload=b'{"kind": "sos"}', meta={"topic": "sosbridge/t1/btn-1/alert"}, retained=True)
    claim = Claim("mqtt", identifiers=(("deveui", "00aa"), ("ttn", "x")), device_id="btn-1", tenant="t1",
                  fallback_profile="gps", companion=True, label="device 'btn-1'", auth="broker")
    method, (f, c, raw, overrides, ref, answered) = through_the_wire(
        receive_request(frame, claim, "raw", {"alert_id": "a1"}, "deveui", True))
    assert method == RECEIVE
    assert frame_from(f) == frame and claim_from(c) == claim
    assert (raw, overrides, ref, answered) == ("raw", {"alert_id": "a1"}, "deveui", True)
    method, (frames, ref, answered, behind) = through_the_wire(
        batch_request([(frame, claim, None), (frame, claim, "r2")], None, False, after_previous=True))
    assert method == BATCH and [(frame_from(f), claim_from(c), raw) for f, c, raw in frames] == [
        (frame, claim, None), (frame, claim, "r2")]
    assert behind is True
    # The child finds the sender of either request from it: the key the parent placed it by.
    single = through_the_wire(receive_request(frame, claim, None, None, None, False))
    batch = through_the_wire(batch_request([(frame, claim, None)], None, False))
    assert request_key(*single) == request_key(*batch) == dispatch_key(claim) == "t1/btn-1"
    assert frame_fields(frame_from(frame_fields(frame))) == frame_fields(frame)
    assert claim_from(claim_fields(claim)) == claim


def test_a_receipt_crosses_with_its_device_profile_and_results() -> None:
    receipt = Receipt("accepted", "", "", (SubmitResult("a1", "created", AlertState.received),
                                           SubmitResult(None, "recorded", None)),
                      DEVICE, PROFILES.get("sosbridge-json"), {"note": "x"}, repeatable=True)
    again = Reader(PROFILES.get).receipt(through_the_wire(receipt_fields(receipt)))
    assert again == receipt
    refused = Receipt.refused("unknown_device", "no such device")
    assert Reader(PROFILES.get).receipt(through_the_wire(receipt_fields(refused))) == refused


def test_a_status_event_crosses_with_its_text_and_device() -> None:
    text = TextMessage("m1", "Help is on the way", "gd", True, False, "2026-12-07T22:00:00Z")
    event = StatusEvent("a1", "btn-1", "t1", AlertState.forwarded, "message", text, "sos", True, "mqtt", DEVICE,
                        version=7)
    kind, fields = through_the_wire(event_fields(event))
    again = Reader(PROFILES.get).event(fields)
    assert kind == EVENT and again == event and again.device == DEVICE and again.version == 7


def test_a_sender_is_placed_by_its_device_or_first_identity() -> None:
    assert dispatch_key(Claim("mqtt", device_id="b1", tenant="t1")) == "t1/b1"
    assert dispatch_key(Claim("mqtt", identifiers=(("z2m", "gw/x"), ("ieee", "0x1")))) == "z2m:gw/x"
    assert dispatch_key(Claim("mqtt", label="somebody")) == "somebody"
    # The same claim, built again for the next frame, lands where the last one did.
    assert dispatch_key(Claim("mqtt", device_id="b1", tenant="t1")) == dispatch_key(
        claim_from(claim_fields(Claim("mqtt", device_id="b1", tenant="t1"))))
