"""One non-INVITE client transaction (RFC 3261 §17.1.2) for a MESSAGE: send, wait for the final answer.

TCP and TLS: one connection per MESSAGE, no retransmission (the transport is reliable), provisional
responses skipped, the whole transaction bounded by `timeout_s` (Timer F, 64*T1 = 32 s by default). UDP:
retransmitted at T1, doubling up to T2 (Timer E) until a response or `timeout_s`; RFC 3261 §18.1.1 says a
request within 200 bytes of the path MTU (taken as 1500) goes over TCP instead, and so it does here.
A response whose Via branch or CSeq is not ours is ignored. Errors: `SipTimeout`, `OSError`, `SipParseError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from bridge.delivery.sip.response import (
    MAX_HEAD,
    SipParseError,
    SipResponse,
    content_length,
    parse_datagram,
    split_head,
)
from bridge.delivery.sip.uri import Hop

T1 = 0.5
T2 = 4.0
UDP_LIMIT = 1300  # RFC 3261 §18.1.1: path MTU (1500) minus 200 bytes

# build(transport, local_host, local_port) -> request bytes; called once the local address is known.
Builder = Callable[[str, str, int], bytes]


class SipTimeout(TimeoutError):
    """No final response within the transaction timeout."""


def _ours(response: SipResponse, branch: str) -> bool:
    via = response.get("via") or ""
    cseq = (response.get("cseq") or "").split()
    return f"branch={branch}" in via and cseq[-1:] == ["MESSAGE"]


async def read_response(reader: asyncio.StreamReader) -> SipResponse:
    """The next response on a stream, framed by its Content-Length (RFC 3261 §18.3)."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise SipParseError("response head is too large") from exc
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("the connection closed before a response") from exc
        head = head.lstrip(b"\r\n")
        if head:  # bare CRLFs are keep-alives (RFC 5626)
            break
    status, reason, headers = split_head(head[:-4])
    length = content_length(headers)
    if length is None:
        raise SipParseError("a response on a stream needs Content-Length")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise ConnectionResetError("the connection closed inside a response body") from exc
    return SipResponse(status, reason, tuple(headers), body)


async def _stream(hop: Hop, build: Builder, branch: str, tls: ssl.SSLContext | None, timeout_s: float) -> SipResponse:
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(
            hop.host, hop.port, ssl=tls, server_hostname=hop.host if tls else None, limit=MAX_HEAD
        )
    try:
        local = writer.get_extra_info("sockname")
        writer.write(build("TLS" if tls else "TCP", local[0], local[1]))
        async with asyncio.timeout(timeout_s):
            await writer.drain()
            while True:
                response = await read_response(reader)
                if response.final and _ours(response, branch):
                    return response
    except TimeoutError as exc:
        raise SipTimeout(f"no final response within {timeout_s:g} s") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, branch: str) -> None:
        self.branch = branch
        self.final: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self.provisional = False

    def datagram_received(self, data: bytes, addr: object) -> None:
        try:
            response = parse_datagram(data)
        except SipParseError:
            return  # RFC 3261 §18.3: a malformed datagram is discarded
        if not _ours(response, self.branch):
            return
        if response.final and not self.final.done():
            self.final.set_result(response)
        elif not response.final:
            self.provisional = True

    def error_received(self, exc: Exception) -> None:
        if not self.final.done():
            self.final.set_exception(exc)


async def _udp(hop: Hop, build: Builder, branch: str, timeout_s: float) -> SipResponse:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Datagrams(branch), remote_addr=(hop.host, hop.port)
    )
    try:
        local = transport.get_extra_info("sockname")
        request = build("UDP", local[0], local[1])
        interval = T1
        async with asyncio.timeout(timeout_s):
            while True:
                transport.sendto(request)
                done, _ = await asyncio.wait({protocol.final}, timeout=interval)
                if done:
                    return protocol.final.result()
                interval = T2 if protocol.provisional else min(interval * 2, T2)
    except TimeoutError as exc:
        raise SipTimeout(f"no final response within {timeout_s:g} s") from exc
    finally:
        transport.close()


async def send_request(
    hop: Hop, build: Builder, branch: str, *, size_hint: int, timeout_s: float, tls: ssl.SSLContext | None = None
) -> SipResponse:
    """Send the request `build` makes to `hop` and return its final response."""
    if hop.transport == "tls":
        return await _stream(hop, build, branch, tls or ssl.create_default_context(), timeout_s)
    if hop.transport == "udp" and size_hint < UDP_LIMIT:
        return await _udp(hop, build, branch, timeout_s)
    return await _stream(hop, build, branch, None, timeout_s)
