"""The reference platform's RFC 8876 end: a PSAP that takes SIP MESSAGEs over TCP on loopback.

It reads each MESSAGE (Content-Length framing), checks the CAP and PIDF-LO parts with the bridge's own
validators, records what arrived and answers 200 OK (RFC 3261 §8.2.6: Via, From, To with a tag, Call-ID
and CSeq copied). For the demo and manual tries; the tests use Kamailio and SIPp, real SIP software.
Docs: docs/platform/sip-message.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import secrets
from dataclasses import dataclass, field
from typing import Any

from bridge.delivery.formats import validate

MAX_HEAD = 65536


@dataclass
class SipPsap:
    host: str = "127.0.0.1"
    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def uri(self) -> str:
        return f"sip:sos@{self.host}:{self.port};transport=tcp"

    async def __aenter__(self) -> SipPsap:
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(30):  # one MESSAGE per connection is what the bridge sends
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("utf-8", "replace").split("\r\n")
                headers = [(n.strip().lower(), v.strip()) for n, _, v in (x.partition(":") for x in lines[1:] if x)]
                hdr = dict(headers)
                body = await reader.readexactly(int(hdr.get("content-length", "0")))
                self.received.append(self.record(lines[0], hdr, body))
                tag = secrets.token_hex(4)
                answer = ["SIP/2.0 200 OK"] + [f"Via: {v}" for n, v in headers if n == "via"] + [
                    f"From: {hdr.get('from', '')}", f"To: {hdr.get('to', '')};tag={tag}",
                    f"Call-ID: {hdr.get('call-id', '')}", f"CSeq: {hdr.get('cseq', '')}", "Content-Length: 0"]
                writer.write(("\r\n".join(answer) + "\r\n\r\n").encode())
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    def record(request_line: str, hdr: dict[str, str], body: bytes) -> dict[str, Any]:
        msg = email.message_from_bytes(f"Content-Type: {hdr.get('content-type', '')}\r\n\r\n".encode() + body,
                                       policy=email.policy.default)
        parts: dict[str, bytes] = {}
        if msg.is_multipart():
            for part in msg.iter_parts():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    parts[part.get_content_type()] = payload
        cap = parts.get("application/emergencycalldata.cap+xml", b"")
        pidf = parts.get("application/pidf+xml")
        errors = validate(cap, "application/EmergencyCallData.cap+xml") if cap else ["no CAP part"]
        if pidf is not None:
            errors += validate(pidf, "application/pidf+xml")
        return {
            "request_line": request_line, "call_info": hdr.get("call-info"), "geolocation": hdr.get("geolocation"),
            "geolocation_routing": hdr.get("geolocation-routing"), "idempotency_key": hdr.get("idempotency-key"),
            "parts": sorted(parts), "errors": errors, "cap": cap.decode("utf-8", "replace"),
        }
