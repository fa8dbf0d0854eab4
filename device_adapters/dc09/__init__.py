"""SIA DC-09 receiver on TCP and UDP (`SOSBRIDGE_DC09_PORT`, off unless set): alarm panels, telecare
hubs and alarm receivers report here as they would to an alarm receiving centre.

Per message (device_adapters/decoders/dc09.py for the format):
1. framing by the length field (a CR inside a field never splits a message; a wrong length ends at the
   first CR once the panel pauses for GRACE_S); CRC-16/ARC and length checked; a bad one is refused,
   counted and NAKed (the panel repeats);
2. the account in the header names the premises (registered with `--identifier dc09=<account>`); an
   unknown account is refused, counted and NAKed;
3. an encrypted message (`*SIA-DCS`, `*ADM-CID`, `*NULL`) is decrypted with the account's key
   (credential `dc09_key`); a wrong key is refused, counted and NAKed, and so is a plain message for an
   account that has a key (no downgrade);
4. the timestamp must be within -40/+20 s of our clock (NAK with our time otherwise, so the panel can
   correct its clock); mandatory when encrypted;
5. the decrypted message goes to the ingress (Claim `dc09=<account>`), whose Receipt decides the answer:
   ACK (encrypted when the message was) once stored, or understood and not an event for the police
   (burglary, open/close: counted as unmatched, still kissed off or the panel would repeat for ever);
   DUH when the data block cannot be processed; NAK when refused; nothing at all when it could not be
   stored, so the panel keeps the event and sends it again.

`NULL` messages are link tests: the profile maps them to check-ins, so supervision sees the link.
Silent events (duress, hold-up) stay silent: DC-09 has no channel back to the premises, and the contact
carries `silent: true`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from bridge.core.model import utcnow
from bridge.devices.decoding import DecodeError, Frame
from bridge.ingress import Claim
from bridge.ingress.transport import BaseAdapter
from bridge.store.base import StoreError
from device_adapters.decoders import dc09

if TYPE_CHECKING:
    from bridge.app.config import Settings
    from bridge.ingress.transport import AdapterContext

log = logging.getLogger("sosbridge.dc09")

TRANSPORT = "dc09"
GRACE_S = 0.5  # a message whose length field reaches past what was sent ends at its CR after this pause
IDLE_S = 120.0  # panels open a connection per report or keep one for supervision; a silent one goes
MAX_CONNECTIONS = 4096  # TCP connections held at once
MAX_DATAGRAMS = 512  # UDP messages being handled at once; beyond, no answer (the panel repeats), counted


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, adapter: Dc09Adapter) -> None:
        self.adapter = adapter
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(self.tasks) >= MAX_DATAGRAMS:
            self.adapter.refuse("overloaded", via="udp")
            return
        task = asyncio.create_task(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        frames, _ = dc09.split_frames(data if data.endswith(b"\r") else data + b"\r", final=True)
        for raw in frames:
            reply = await self.adapter.handle(raw, "udp")
            if reply is not None and self.transport is not None:
                self.transport.sendto(reply, addr)


class Dc09Adapter(BaseAdapter):
    name = "dc09"

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.port: int | None = None
        self.open_connections = 0

    def enabled(self, settings: Settings) -> bool:
        return settings.dc09_port is not None

    async def start(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        host, port = ctx.settings.dc09_host, ctx.settings.dc09_port
        self.server = await asyncio.start_server(self._serve, host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, self.port))
        log.info("dc09 receiver started", extra={"host": host, "port": self.port})

    async def stop(self) -> None:
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= MAX_CONNECTIONS:
            self.refuse("too_many_connections", via="tcp")
            writer.close()
            return
        self.open_connections += 1
        buffer = b""
        paused = False  # the grace time passed with a message still open: its first CR ends it
        try:
            while True:
                waiting = bool(buffer) and not paused
                try:
                    data = await asyncio.wait_for(reader.read(4096), GRACE_S if waiting else IDLE_S)
                except TimeoutError:
                    if not waiting:
                        return
                    paused, data = True, b""
                else:
                    if not data:
                        return
                    paused = False
                buffer += data
                frames, rest = dc09.split_frames(buffer, final=paused)
                if len(buffer) > dc09.MAX_MESSAGE and not frames and not rest:
                    self.refuse("too_large")
                buffer = rest
                for raw in frames:
                    reply = await self.handle(raw, "tcp")
                    if reply is not None:
                        writer.write(reply)
                        await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self.open_connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def refuse(self, code: str, **extra: object) -> None:
        self.ctx.metrics.rejected(TRANSPORT, code)
        log.info("dc09 message refused", extra={"reason": code, **extra})

    async def handle(self, raw: bytes, via: str) -> bytes | None:
        """One message; returns the answer to send (None: say nothing, the panel repeats)."""
        now = utcnow()
        try:
            message = dc09.parse_block(dc09.check_frame(raw))
        except DecodeError as exc:
            self.refuse(getattr(exc, "code", "malformed"), via=via, error=str(exc)[:100])
            return dc09.nak(now)
        try:
            device = await self.ctx.store.find_device("dc09", message.account) if message.account else None
            key_text = await self.ctx.store.get_credential(device.device_id, "dc09_key") if device else None
        except StoreError:
            return None  # cannot even tell who it is: the panel repeats
        if device is None:
            self.refuse("unknown_device", via=via)
            return dc09.nak(now, message)
        try:
            key = dc09.parse_key(key_text) if key_text else None
            if key is not None and not message.encrypted:
                raise dc09.KeyError_("this account reports encrypted; a plain message is refused")
            message = dc09.open_message(message.body, key)
            dc09.check_window(message, now)
        except DecodeError as exc:
            self.refuse(getattr(exc, "code", "malformed"), via=via, device_id=device.device_id)
            return dc09.nak(now, message)
        body = dc09.clear_body(message)
        claim = Claim(TRANSPORT, identifiers=(("dc09", message.account),), label=f"account {message.account!r}",
                      auth="aes" if key is not None else "none")
        receipt = await self.ctx.ingress.receive(
            Frame(payload=body.encode("ascii"), meta={"protocol": "dc09", "via": via}), claim, raw=body)
        log.info("dc09 message handled", extra={"status": receipt.status, "code": receipt.code, "via": via,
                                                "alert_ids": [r.alert_id for r in receipt.results]})
        if not receipt.acknowledge:
            return None
        if receipt.status == "refused":
            return dc09.duh(message) if receipt.code == "invalid" else dc09.nak(now, message)
        return dc09.ack(message, key, now)
