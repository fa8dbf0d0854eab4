"""The `acme-tcp` transport: pendants connect over TCP and send 24-byte frames; each gets ACK + seq once
its alert is stored, NAK + seq otherwise.

The path every transport follows, and the one to copy:
    receive (frame the bytes) → `ctx.ingress.receive(Frame, Claim)` → answer from the `Receipt`.
The transport only frames and answers. Identity, the device's profile, decoding (the `acme-binary`
decoder), debouncing, admission and storage are the ingress's; the pendant is acknowledged only when the
Receipt says so (never when nothing was stored, so the pendant keeps retrying).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from bridge.devices.decoding import Frame
from bridge.ingress import Claim, Receipt
from bridge.ingress.transport import AdapterContext, BaseAdapter
from sosbridge_acme.frame import ACK, FRAME_LEN, NAK
from sosbridge_acme.settings import AcmeSettings

log = logging.getLogger("sosbridge.acme")
TRANSPORT = "acme-tcp"
SCHEME = "acme_serial"  # the registry identifier a pendant's serial number is bound to


def serial_of(raw: bytes) -> str:
    """The serial number in bytes 3..8: byte-level framing only, the decoder checks the whole frame."""
    return raw[3:9].hex()


def answer(receipt: Receipt, raw: bytes) -> bytes:
    """ACK + the frame's sequence number once stored (or already stored); NAK + seq otherwise, with seq 0
    when the frame itself was unreadable (its sequence number cannot be trusted)."""
    seq = raw[10:12]
    if receipt.stored:
        return bytes([ACK]) + seq
    if receipt.status == "refused" and receipt.code in ("invalid", "bad_checksum"):
        return bytes([NAK, 0, 0])
    return bytes([NAK]) + seq


class AcmeTcpAdapter(BaseAdapter):
    name = TRANSPORT
    # The transport name profiles use (`transport: acme-tcp`) and how it answers (`ack: acme_ack`).
    transports: ClassVar[Mapping[str, frozenset[str]]] = {TRANSPORT: frozenset({"acme_ack"})}

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    def enabled(self, settings: Any) -> bool:
        return settings.section(AcmeSettings).port is not None

    async def start(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        own = ctx.settings.section(AcmeSettings)  # SOSBRIDGE_ACME_* or acme_* in the TOML file
        self._server = await asyncio.start_server(self._serve, own.host, own.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                raw = await reader.readexactly(FRAME_LEN)
                writer.write(await self.handle(raw))
                await writer.drain()
        writer.close()

    async def handle(self, raw: bytes) -> bytes:
        serial = serial_of(raw)
        claim = Claim(TRANSPORT, identifiers=((SCHEME, serial),), label=f"pendant {serial}")
        # ref_scheme: the serial the decoder reads from the checked frame must be the one the claim named.
        receipt = await self.ctx.ingress.receive(Frame(payload=raw), claim, raw=raw.hex(), ref_scheme=SCHEME)
        log.debug("acme frame handled", extra={"status": receipt.status, "code": receipt.code,
                                                 "device_id": receipt.device.device_id if receipt.device else None})
        return answer(receipt, raw)
