"""The SIP pieces that are pure: response parsing (RFC 3261 §7), the MESSAGE's shape, targets, outcomes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.delivery.routing import Route, RoutingError, parse_routes
from bridge.delivery.sinks.base import Delivered, Permanent, Retry
from bridge.delivery.sip.message import MessageRequest, Part, build_message
from bridge.delivery.sip.outcome import classify
from bridge.delivery.sip.response import (
    AlertMsgError,
    SipParseError,
    accepted_types,
    alertmsg_error,
    parse_datagram,
    retry_after_s,
)
from bridge.delivery.sip.uri import Hop, SipUriError, next_hop, parse_hop

OK = (b"SIP/2.0 200 OK\r\nv: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx\r\nCSeq: 1 MESSAGE\r\n"
      b"AlertMsg-Error: 103 ;message=\"payload \\\"corrupted\\\"\"\r\nl: 0\r\n\r\n")


def test_compact_forms_case_and_folding() -> None:
    raw = (b"\r\n\r\nSIP/2.0 415 Unsupported Media Type\r\nACCEPT: application/EmergencyCallData.cap+xml,\r\n"
           b"  application/pidf+xml\r\ni: abc\r\nContent-Length: 4\r\n\r\nbodyEXTRA")
    r = parse_datagram(raw)
    assert (r.status, r.reason, r.get("call-id"), r.body) == (415, "Unsupported Media Type", "abc", b"body")
    assert accepted_types(r) == ["application/EmergencyCallData.cap+xml", "application/pidf+xml"]


def test_alertmsg_error_with_an_escaped_message() -> None:
    r = parse_datagram(OK)
    assert alertmsg_error(r) == AlertMsgError(103, 'payload "corrupted"')
    assert classify(r) == Delivered(200)


@pytest.mark.parametrize("value", ["120", "120 (lunch) ;duration=60", " 5"])
def test_retry_after_forms(value: str) -> None:
    r = parse_datagram(b"SIP/2.0 500 Oops\r\nRetry-After: " + value.encode() + b"\r\n\r\n")
    assert retry_after_s(r) == float(value.split()[0])


@pytest.mark.parametrize(
    "raw",
    [b"HTTP/1.1 200 OK\r\n\r\n", b"SIP/2.0 99 Too low\r\n\r\n", b"SIP/2.0 200 OK\r\nno colon\r\n\r\n",
     b"SIP/2.0 200 OK\r\n folded first\r\n\r\n", b"SIP/2.0 200 OK\r\nl: 5\r\n\r\nab",
     b"SIP/2.0 200 OK\r\nl: 1\r\nContent-Length: 2\r\n\r\nab", b"SIP/2.0 200 OK\r\n"],
)
def test_malformed_responses_are_refused(raw: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_datagram(raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_any_bytes_parse_or_raise_sip_parse_error(data: bytes) -> None:
    try:
        r = parse_datagram(data)
    except SipParseError:
        return
    assert 100 <= r.status <= 699
    alertmsg_error(r), retry_after_s(r), accepted_types(r), classify(r)


@settings(max_examples=200, deadline=None)
@given(st.integers(100, 699), st.lists(st.tuples(st.sampled_from(["Retry-After", "AlertMsg-Error", "Accept", "X"]),
                                                 st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                                         max_size=40)), max_size=5))
def test_fuzz_any_status_and_headers_classify(status: int, headers: list[tuple[str, str]]) -> None:
    raw = f"SIP/2.0 {status} R\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    outcome = classify(parse_datagram(raw.encode()))
    expected = Retry if status < 200 else Delivered if status < 300 else (Retry, Permanent)
    assert isinstance(outcome, expected)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, Delivered), (202, Delivered), (415, Permanent), (425, Permanent), (501, Permanent), (404, Permanent),
     (302, Permanent), (603, Permanent), (408, Retry), (480, Retry), (500, Retry), (503, Retry), (504, Retry)],
)
def test_outcome_table(status: int, kind: type) -> None:
    assert isinstance(classify(parse_datagram(f"SIP/2.0 {status} X\r\n\r\n".encode())), kind)


def request(pidf: bool = True) -> bytes:
    return build_message(MessageRequest(
        request_uri="urn:service:sos", from_uri="sip:bridge@example.org", from_tag="t", to_uri="urn:service:sos",
        call_id="c@example.org", branch="z9hG4bKb", via_transport="TCP", via_host="127.0.0.1", via_port=5999,
        cap=Part("application/EmergencyCallData.cap+xml", "cap-1@example.org", b"<alert/>"),
        pidf=Part("application/pidf+xml", "loc-1@example.org", b"<presence/>") if pidf else None,
        boundary="b1", geolocation_routing=True, idempotency_header="Idempotency-Key", idempotency_key="k1",
    ))


def test_message_shape() -> None:
    raw = request()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "MESSAGE urn:service:sos SIP/2.0"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Call-Info"] == "<cid:cap-1@example.org>;purpose=EmergencyCallData.cap"
    assert headers["Geolocation"] == "<cid:loc-1@example.org>" and headers["Geolocation-Routing"] == "yes"
    assert headers["Content-Length"] == str(len(body)) and headers["Idempotency-Key"] == "k1"
    assert body.count(b"\r\n\r\n") == 2 and body.endswith(b"--b1--\r\n")
    assert b"Geolocation" not in request(pidf=False)


def test_targets_and_hops() -> None:
    assert parse_hop("sip:sos@127.0.0.1:5070;transport=tcp") == Hop("127.0.0.1", 5070, "tcp")
    assert parse_hop("sips:psap.example") == Hop("psap.example", 5061, "tls")
    assert parse_hop("sip:[::1]:5080;transport=UDP") == Hop("::1", 5080, "udp")
    assert next_hop("urn:service:sos", "sip:esrp.example;transport=tls") == Hop("esrp.example", 5061, "tls")
    for bad in ("sips:x;transport=tcp", "sip:x;transport=sctp", "sip:", "sip:a b"):
        with pytest.raises(SipUriError):
            parse_hop(bad)
    with pytest.raises(SipUriError):
        next_hop("urn:service:sos", None)


def test_a_sip_route_needs_no_secret_but_a_urn_needs_a_proxy() -> None:
    (route,) = parse_routes([{"name": "ng112", "url": "sip:sos@127.0.0.1:5070;transport=tcp"}])
    assert isinstance(route, Route) and route.secret is None and not route.needs_secret
    with pytest.raises(RoutingError, match="sip_outbound_proxy"):
        parse_routes([{"name": "esrp", "url": "urn:service:sos"}])
    with pytest.raises(RoutingError, match="secret is required"):
        parse_routes([{"name": "ng112", "url": "sip:sos@psap.example", "fallback_url": "https://s.example/x"}])
    with pytest.raises(RoutingError, match="http"):
        parse_routes([{"name": "x", "url": "ftp://x"}])
