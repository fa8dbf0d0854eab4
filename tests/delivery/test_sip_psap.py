"""RFC 8876 end to end against real software: Kamailio as the PSAP (200, 415 + Accept, 425 +
AlertMsg-Error, 501) and SIPp as a UAS (500 + Retry-After, 503, no answer, a dropped connection)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from bridge.delivery.formats import validate
from bridge.delivery.formats.schema_loader import CAP_NS
from bridge.delivery.sinks.base import Delivered, Outcome, Permanent, Retry
from bridge.delivery.sip.sink import SipSink
from bridge.store.base import OutboxItem
from simulator.platform.pki import make_pki
from tests.support.formats_factory import EDINBURGH_CASTLE, contact, gnss, no_location_contact
from tests.support.sip import kamailio, scenario_answer, scenario_drop, scenario_silent, sipp, tls_front


def item(key: str = "key-1", with_location: bool = True) -> OutboxItem:
    c = contact(location=gnss(*EDINBURGH_CASTLE)) if with_location else no_location_contact()
    return OutboxItem("i1", c.alert_id, 1, "alert", key, c.to_json(), True)


async def deliver(sink: SipSink, it: OutboxItem) -> Outcome:
    async with asyncio.timeout(sink.timeout_s + 5):
        return await sink.deliver(it)


def parts(content_type: str, body: bytes) -> list[MIMEPart]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    msg = email.message_from_bytes(head + body, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg.is_multipart()
    return list(msg.iter_parts())


async def test_kamailio_takes_a_valid_rfc8876_message(tmp_path: Path) -> None:
    with kamailio(tmp_path) as psap:
        sink = SipSink(psap.uri(), timeout_s=5, geolocation_routing=False)
        assert await deliver(sink, item("key-200")) == Delivered(200)
        (got,) = psap.received()
    assert got.request_uri == psap.uri() and got.proto == "tcp"
    assert got.supported == "geolocation" and got.geolocation_routing == "no"
    assert got.idempotency_key == "key-200"
    cap_part, pidf_part = parts(got.content_type, got.body)
    assert cap_part.get_content_type() == "application/emergencycalldata.cap+xml"
    assert pidf_part.get_content_type() == "application/pidf+xml"
    cap_cid, pidf_cid = cap_part["Content-ID"].strip("<>"), pidf_part["Content-ID"].strip("<>")
    assert cap_cid != pidf_cid
    assert got.call_info == f"<cid:{cap_cid}>;purpose=EmergencyCallData.cap"
    assert got.geolocation == f"<cid:{pidf_cid}>"
    assert b"\r\n\r\n<?xml" in got.body  # a blank line between each part's headers and its body
    cap_body, pidf_body = cap_part.get_payload(decode=True), pidf_part.get_payload(decode=True)
    assert isinstance(cap_body, bytes) and isinstance(pidf_body, bytes)
    assert validate(cap_body, "application/EmergencyCallData.cap+xml") == []
    assert validate(pidf_body, "application/pidf+xml") == []
    root = ET.fromstring(cap_body)
    ns = {"c": CAP_NS}
    assert root.findtext("c:sender", namespaces=ns) == "sip:sosbridge@sosbridge.invalid"
    assert root.findtext("c:incidents", namespaces=ns)
    assert root.find("c:info/c:area", ns) is None
    assert root.findtext("c:scope", namespaces=ns) == "Private"
    assert root.findtext("c:addresses", namespaces=ns) == psap.uri()


async def test_a_retry_carries_the_same_key_and_cap(tmp_path: Path) -> None:
    with kamailio(tmp_path) as psap:
        sink = SipSink(psap.uri(), timeout_s=5)
        for _ in range(2):
            assert isinstance(await deliver(sink, item("key-same")), Delivered)
        first, second = psap.received()
    assert first.idempotency_key == second.idempotency_key == "key-same"
    cap1 = parts(first.content_type, first.body)[0].get_payload(decode=True)
    cap2 = parts(second.content_type, second.body)[0].get_payload(decode=True)
    assert cap1 == cap2
    assert first.geolocation_routing == "yes"


async def test_without_a_location_only_cap_travels(tmp_path: Path) -> None:
    with kamailio(tmp_path) as psap:
        assert isinstance(await deliver(SipSink(psap.uri(), timeout_s=5), item(with_location=False)), Delivered)
        (got,) = psap.received()
    assert got.geolocation == "<null>" and len(parts(got.content_type, got.body)) == 1


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("sos-415", "SIP 415: the PSAP accepts application/EmergencyCallData.cap+xml, application/pidf+xml"),
        ("sos-425", "SIP 425 Bad Alert Message: AlertMsg-Error 102 not enough information"),
        ("sos-501", "SIP 501 Not Implemented: the PSAP does not take MESSAGE"),
    ],
)
async def test_kamailio_refusals_are_permanent(tmp_path: Path, user: str, expected: str) -> None:
    with kamailio(tmp_path) as psap:
        assert await deliver(SipSink(psap.uri(user), timeout_s=5), item()) == Permanent(expected)


async def test_an_alertmsg_error_in_a_200_is_delivered_and_counted(tmp_path: Path) -> None:
    with kamailio(tmp_path) as psap:
        sink = SipSink(psap.uri("sos-200-err"), timeout_s=5)
        assert await deliver(sink, item()) == Delivered(200)
    assert sink.alertmsg_errors == 1


async def test_a_small_message_goes_over_udp_a_large_one_over_tcp(tmp_path: Path) -> None:
    with kamailio(tmp_path) as psap:
        sink = SipSink(psap.uri(transport="udp"), timeout_s=5)
        assert isinstance(await deliver(sink, item()), Delivered)
        (got,) = psap.received()
    assert got.proto == "tcp"  # CAP + PIDF-LO exceed 1300 bytes: RFC 3261 §18.1.1 switches to TCP


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        ("500 Server Internal Error", ("Retry-After: 7",), Retry("SIP 500 Server Internal Error", 7.0)),
        ("503 Service Unavailable", (), Retry("SIP 503 Service Unavailable", None)),
        ("408 Request Timeout", (), Retry("SIP 408 Request Timeout", None)),
    ],
)
async def test_sipp_answers_are_retried(tmp_path: Path, status: str, headers: tuple[str, ...],
                                        expected: Retry) -> None:
    with sipp(tmp_path, scenario_answer(status, *headers)) as uas:
        assert await deliver(SipSink(uas.uri(), timeout_s=5), item()) == expected


async def test_no_answer_is_a_timeout_retry(tmp_path: Path) -> None:
    with sipp(tmp_path, scenario_silent(5000)) as uas:
        outcome = await deliver(SipSink(uas.uri(), timeout_s=1.0), item())
    assert isinstance(outcome, Retry) and outcome.reason.startswith("SIP timeout")


async def test_a_dropped_connection_is_a_retry(tmp_path: Path) -> None:
    with sipp(tmp_path, scenario_drop()) as uas:
        outcome = await deliver(SipSink(uas.uri(), timeout_s=5), item())
    assert isinstance(outcome, Retry) and "ConnectionResetError" in outcome.reason


async def test_sips_over_tls_checks_the_psap_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with kamailio(tmp_path) as psap:
        async with tls_front(psap.port, pki.server_cert, pki.server_key) as port:
            good = SipSink(f"sips:sos@127.0.0.1:{port}", timeout_s=5, ca_file=str(pki.ca))
            assert await deliver(good, item("key-tls")) == Delivered(200)
            # A PSAP whose certificate the route does not trust gets nothing: a retry, not a delivery.
            untrusting = SipSink(f"sips:sos@127.0.0.1:{port}", timeout_s=5)
            outcome = await deliver(untrusting, item("key-untrusted"))
        assert [r.idempotency_key for r in psap.received()] == ["key-tls"]
    assert isinstance(outcome, Retry) and "CERTIFICATE_VERIFY_FAILED" in outcome.reason
