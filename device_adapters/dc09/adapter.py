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

Abuse limits (docs/operations/security.md): one source address holds at most
`SOSBRIDGE_LISTENER_PER_SOURCE` TCP connections and MAX_DATAGRAMS_PER_SOURCE UDP messages in hand; a TCP
connection with no whole message within `SOSBRIDGE_LISTENER_FIRST_FRAME_S` is closed; over UDP only a
well-framed message (CRC and length right) is answered, so a forged source address cannot be sent NAKs;
an encrypted block seen within the timestamp window under another sequence number is a replay (NAK);
a plain (keyless) account, which anyone who knows its number can speak for, is accepted only from
`SOSBRIDGE_DC09_PLAIN_ALLOW` when that is set, and is named in the start-up summary.

`NULL` messages are link tests: the profile maps them to check-ins, so supervision sees the link.
Silent events (duress, hold-up) stay silent: DC-09 has no channel back to the premises, and the contact
carries `silent: true`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING

from bridge.core.model import utcnow
from bridge.devices.decoding import DecodeError, Frame
from bridge.infra.listeners import SourceGuard, allowed, host_of, parse_networks
from bridge.ingress import Claim
from bridge.ingress.transport import BaseAdapter
from bridge.store.base import StoreError
from device_adapters.dc09.settings import Dc09Settings
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
MAX_DATAGRAMS_PER_SOURCE = 32  # ... and from one source address
REPLAY_WINDOW_S = dc09.WINDOW_BEHIND_S + dc09.WINDOW_AHEAD_S  # a replayed block is stale after this
MAX_REMEMBERED = 100_000  # encrypted blocks remembered for the replay check (oldest first)


class ReplayMemory:
    """Encrypted blocks accepted within the timestamp window, with their sequence number: the same block
    again under another sequence number is a replay; under the same one, the panel's own retry."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S, max_entries: int = MAX_REMEMBERED) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    def replayed(self, account: str, block: str, sequence: str, now: float) -> bool:
        while self._seen and next(iter(self._seen.values()))[1] < now - self.window_s:
            self._seen.popitem(last=False)
        key = hashlib.blake2b(f"{account}|{block}".encode(), digest_size=16).digest()
        seen = self._seen.get(key)
        if seen is not None and seen[1] >= now - self.window_s:
            return seen[0] != sequence
        self._seen[key] = (sequence, now)
        if len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return False


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, adapter: Dc09Adapter) -> None:
        self.adapter = adapter
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.per_source: Counter[str] = Counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        host = host_of(addr)
        if len(self.tasks) >= MAX_DATAGRAMS or self.per_source[host] >= MAX_DATAGRAMS_PER_SOURCE:
            self.adapter.refuse("overloaded", via="udp")
            return
        self.per_source[host] += 1
        task = asyncio.create_task(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda _t: self._done(host))

    def _done(self, host: str) -> None:
        self.per_source[host] -= 1
        if self.per_source[host] <= 0:
            del self.per_source[host]

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        frames, _ = dc09.split_frames(data if data.endswith(b"\r") else data + b"\r", final=True)
        for raw in frames:
            reply = await self.adapter.handle(raw, "udp", host_of(addr))
            if reply is not None and self.transport is not None:
                self.transport.sendto(reply, addr)


class Dc09Adapter(BaseAdapter):
    name = "dc09"
    transports = {"dc09": frozenset({"dc09_ack"})}

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.port: int | None = None
        self.open_connections = 0
        self.replays = ReplayMemory()
        self.summary_notes: list[str] = []  # shown in `serve`'s start-up summary

    def enabled(self, settings: Settings) -> bool:
        return settings.section(Dc09Settings).port is not None

    async def start(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        self.guard = SourceGuard(ctx.settings.listener_per_source)
        self.first_frame_s = ctx.settings.listener_first_frame_s
        own = ctx.settings.section(Dc09Settings)
        self.plain_allow = parse_networks(own.plain_allow)
        host, port = own.host, own.port
        self.server = await asyncio.start_server(self._serve, host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, self.port))
        log.info("dc09 receiver started", extra={"host": host, "port": self.port})
        await self._note_plain_accounts()

    async def _note_plain_accounts(self) -> None:
        """Warn of accounts without an AES key: anyone who knows the number can raise or cancel for them."""
        try:
            devices = [d for d in await self.ctx.store.list_devices() if d.identifiers.get("dc09")]
            plain = [d.device_id for d in devices
                     if await self.ctx.store.get_credential(d.device_id, "dc09_key") is None]
        except StoreError:
            return
        if plain:
            where = ("accepted only from SOSBRIDGE_DC09_PLAIN_ALLOW" if self.plain_allow
                     else "accepted from anywhere: set SOSBRIDGE_DC09_PLAIN_ALLOW")
            note = (f"{len(plain)} plain DC-09 account(s) without an AES key ({', '.join(plain[:5])}"
                    f"{', ...' if len(plain) > 5 else ''}): anyone who knows the account number can raise or "
                    f"cancel their alerts; give each a key (sosbridge devices dc09-key) — {where}")
            self.summary_notes = [note]
            log.warning("plain DC-09 accounts", extra={"count": len(plain), "allow_list": bool(self.plain_allow)})

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
        host = host_of(writer.get_extra_info("peername"))
        if self.open_connections >= MAX_CONNECTIONS:
            self.refuse("too_many_connections", via="tcp")
            writer.close()
            return
        if (why := self.guard.admit(host)) is not None:
            self.refuse(why, via="tcp")
            writer.close()
            return
        self.open_connections += 1
        buffer = b""
        paused = False  # the grace time passed with a message still open: its first CR ends it
        first_by, handled = time.monotonic() + self.first_frame_s, 0
        try:
            while True:
                waiting = bool(buffer) and not paused
                wait = GRACE_S if waiting else IDLE_S
                if handled == 0:
                    wait = min(wait, max(0.0, first_by - time.monotonic()))
                try:
                    data = await asyncio.wait_for(reader.read(4096), wait)
                except TimeoutError:
                    if handled == 0 and time.monotonic() >= first_by:
                        self.refuse("no_first_frame", via="tcp")
                        return
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
                    handled += 1
                    reply = await self.handle(raw, "tcp", host)
                    if reply is not None:
                        writer.write(reply)
                        await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self.open_connections -= 1
            self.guard.release(host)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def refuse(self, code: str, **extra: object) -> None:
        self.ctx.metrics.rejected(TRANSPORT, code)
        log.info("dc09 message refused", extra={"reason": code, **extra})

    async def handle(self, raw: bytes, via: str, source: str = "") -> bytes | None:
        """One message; returns the answer to send (None: say nothing, the panel repeats)."""
        now = utcnow()
        try:
            message = dc09.parse_block(dc09.check_frame(raw))
        except DecodeError as exc:
            self.refuse(exc.code if exc.code != DecodeError.code else "malformed", via=via, error=str(exc)[:100])
            # Over UDP the source address may be forged: a NAK to noise would reflect it at someone else.
            return None if via == "udp" else dc09.nak(now)
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
                raise dc09.KeyRefused("this account reports encrypted; a plain message is refused")
            block = message.data
            message = dc09.open_message(message.body, key)
            dc09.check_window(message, now)
        except DecodeError as exc:
            self.refuse(exc.code if exc.code != DecodeError.code else "malformed", via=via, device_id=device.device_id)
            return dc09.nak(now, message)
        if key is None and self.plain_allow and not allowed(source, self.plain_allow):
            self.refuse("plain_not_allowed", via=via, device_id=device.device_id)
            return dc09.nak(now, message)
        if message.encrypted and self.replays.replayed(message.account, block, message.sequence, time.monotonic()):
            self.refuse("replay", via=via, device_id=device.device_id)
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
