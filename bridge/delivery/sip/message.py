"""One RFC 8876 SIP MESSAGE as bytes. Pure: the caller passes every varying value (ids, local address).

Body: `multipart/mixed` with a CAP part (`application/EmergencyCallData.cap+xml`) and, when the contact
has a location, a PIDF-LO part (`application/pidf+xml`), each with its own Content-ID and a blank line
between its headers and its body (RFC 2046; RFC 6442 erratum 5027). Headers: `Call-Info` points at the CAP
part with `purpose=EmergencyCallData.cap` (RFC 7852), `Geolocation` at the PIDF-LO part with
`Geolocation-Routing` as its own header and `Supported: geolocation` (RFC 6442), and the outbox's
idempotency key so a PSAP can drop a redelivery.
"""

from __future__ import annotations

from dataclasses import dataclass

CAP_TYPE = "application/EmergencyCallData.cap+xml"
PIDF_TYPE = "application/pidf+xml"
CRLF = "\r\n"


@dataclass(frozen=True)
class Part:
    content_type: str
    content_id: str  # without the angle brackets
    body: bytes


@dataclass(frozen=True)
class MessageRequest:
    request_uri: str
    from_uri: str
    from_tag: str
    to_uri: str
    call_id: str
    branch: str  # starts with the RFC 3261 magic cookie z9hG4bK
    via_transport: str  # UDP, TCP or TLS
    via_host: str
    via_port: int
    cap: Part
    pidf: Part | None
    boundary: str
    geolocation_routing: bool
    idempotency_header: str
    idempotency_key: str
    extra_headers: tuple[tuple[str, str], ...] = ()


def multipart_body(parts: list[Part], boundary: str) -> bytes:
    out = bytearray()
    for part in parts:
        out += f"--{boundary}{CRLF}Content-Type: {part.content_type}{CRLF}".encode()
        out += f"Content-ID: <{part.content_id}>{CRLF}{CRLF}".encode()  # the blank line erratum 5027 asks for
        out += part.body
        out += CRLF.encode()
    out += f"--{boundary}--{CRLF}".encode()
    return bytes(out)


def build_message(req: MessageRequest) -> bytes:
    parts = [req.cap] if req.pidf is None else [req.cap, req.pidf]
    body = multipart_body(parts, req.boundary)
    headers: list[tuple[str, str]] = [
        ("Via", f"SIP/2.0/{req.via_transport} {req.via_host}:{req.via_port};branch={req.branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<{req.from_uri}>;tag={req.from_tag}"),
        ("To", f"<{req.to_uri}>"),
        ("Call-ID", req.call_id),
        ("CSeq", "1 MESSAGE"),
        ("Call-Info", f"<cid:{req.cap.content_id}>;purpose=EmergencyCallData.cap"),
    ]
    if req.pidf is not None:
        headers.append(("Geolocation", f"<cid:{req.pidf.content_id}>"))
        headers.append(("Geolocation-Routing", "yes" if req.geolocation_routing else "no"))
    headers += [
        ("Supported", "geolocation"),
        (req.idempotency_header, req.idempotency_key),
        *req.extra_headers,
        ("Content-Type", f'multipart/mixed;boundary="{req.boundary}"'),
        ("Content-Length", str(len(body))),
    ]
    for name, value in headers:
        if any(c in value for c in "\r\n") or any(c in name for c in "\r\n: "):
            raise ValueError(f"header {name!r} would break the message framing")
    head = f"MESSAGE {req.request_uri} SIP/2.0{CRLF}" + "".join(f"{n}: {v}{CRLF}" for n, v in headers) + CRLF
    return head.encode("utf-8") + body
