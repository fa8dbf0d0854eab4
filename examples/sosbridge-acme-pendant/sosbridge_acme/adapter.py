"""The `acme-tcp` adapter: pendants connect over TCP, send 24-byte frames, get ACK + seq once stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct

from bridge.alerts.pipeline import Rejected
from bridge.app.config import Settings
from bridge.devices.decoding import DecodeError, Frame, get_decoder
from bridge.ingress.transport import AdapterContext, BaseAdapter
from sosbridge_acme.frame import ACK, FRAME_LEN, NAK

log = logging.getLogger("sosbridge.acme")
PROFILE_ID = "acme-pendant-p1"
ENV_NAMES = ("SOSBRIDGE_ACME_PORT",)  # registered under sosbridge.settings: `serve` knows it is read


class AcmeTcpAdapter(BaseAdapter):
    name = "acme-tcp"

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    def enabled(self, settings: Settings) -> bool:
        return bool(os.environ.get("SOSBRIDGE_ACME_PORT"))

    async def start(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        port = int(os.environ["SOSBRIDGE_ACME_PORT"])
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                raw = await reader.readexactly(FRAME_LEN)
                writer.write(await self._handle(raw))
                await writer.drain()
        writer.close()

    async def _handle(self, raw: bytes) -> bytes:
        ctx = self.ctx
        profile = ctx.profiles.get(PROFILE_ID)
        try:
            [event] = get_decoder("acme-binary")(Frame(payload=raw), profile)
        except DecodeError as exc:
            ctx.metrics.rejected("acme-tcp", "bad_frame")
            log.info("frame refused", extra={"reason": str(exc)})
            return bytes([NAK, 0, 0])
        seq = struct.pack(">H", event.attributes["acme_seq"])
        device = await ctx.store.find_device("acme_serial", event.device_ref or "")
        if device is None:
            ctx.metrics.rejected("acme-tcp", "unknown_device")
            return bytes([NAK]) + seq
        try:
            await ctx.pipeline.submit(event.to_observation(device.device_id, "acme-tcp", raw=raw.hex()))
        except Rejected:
            return bytes([NAK]) + seq
        # Only now, with the alert stored, does the pendant stop retrying.
        return bytes([ACK]) + seq
