"""A virtual SIA DC-09 communicator (an alarm panel or telecare hub), plain or AES, over TCP or UDP.

It builds messages as device_adapters/decoders/dc09.py reads them (CRC-16/ARC, hex length, `*` and
`pad|data]_timestamp` encrypted with the account's key), sends one and returns the receiver's answer:
`ACK`, `NAK` or `DUH`, or None when the receiver said nothing (the panel would send again).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

from device_adapters.decoders import dc09
from simulator.scenario import RunContext, Step, action


@dataclass
class Answer:
    token: str  # ACK, NAK, DUH (an encrypted ACK reads "ACK", encrypted=True)
    encrypted: bool
    sequence: str
    timestamp: datetime | None
    raw: bytes


@dataclass
class VirtualPanel:
    host: str
    port: int
    account: str
    key: str | None = None  # as configured on the panel: 16/24/32 characters, or hex:...
    udp: bool = False
    receiver: str = "R0"
    prefix: str = "L0"
    sequence: int = 0

    def message(self, token: str, data: str, *, when: datetime | None = None, seq: int | None = None,
                key: str | None = None, encrypt: bool | None = None) -> bytes:
        """One framed message: `token` SIA-DCS, ADM-CID or NULL; `data` what goes after `#acct|`."""
        if seq is None:
            self.sequence = self.sequence % 9999 + 1
            seq = self.sequence
        when = when or datetime.now(UTC)
        key = key if key is not None else self.key
        encrypt = bool(key) if encrypt is None else encrypt
        head = f"{seq:04d}{self.receiver}{self.prefix}#{self.account}["
        stamp = dc09.timestamp_text(when)
        inner = f"|{data}" if data else ""
        if encrypt and key:
            body = f'"*{token}"{head}{dc09.encrypt_text(dc09.parse_key(key), inner.lstrip("|") + "]" + stamp)}'
        else:
            body = f'"{token}"{head}#{self.account}{inner}]{stamp}' if data else f'"{token}"{head}]{stamp}'
        return dc09.frame_body(body)

    def sia(self, code: str, zone: str = "001", area: str = "1", **kw: object) -> bytes:
        return self.message("SIA-DCS", f"Nri{area}/{code}{zone}", **kw)  # type: ignore[arg-type]

    def cid(self, qualifier: str, event: str, group: str = "01", zone: str = "001", **kw: object) -> bytes:
        return self.message("ADM-CID", f"{qualifier}{event} {group} {zone}", **kw)  # type: ignore[arg-type]

    def null(self, **kw: object) -> bytes:
        return self.message("NULL", "", **kw)  # type: ignore[arg-type]

    async def send(self, raw: bytes, timeout: float = 3.0) -> Answer | None:
        data = await (self._send_udp(raw, timeout) if self.udp else self._send_tcp(raw, timeout))
        return None if data is None else self.read_answer(data)

    def read_answer(self, data: bytes) -> Answer:
        body = dc09.check_frame(data)  # the receiver's answer carries a valid CRC and length too
        block = dc09.parse_block(body.replace('"ACK"', '"SIA-DCS"').replace('"*ACK"', '"*SIA-DCS"')
                                 .replace('"NAK"', '"SIA-DCS"').replace('"DUH"', '"SIA-DCS"'))
        token = body.split('"')[1].lstrip("*")
        timestamp = None
        if block.encrypted and self.key:
            timestamp = dc09.open_message(block.body, dc09.parse_key(self.key)).timestamp
        elif token == "NAK":
            timestamp = dc09._split_data(block, block.data).timestamp
        return Answer(token, block.encrypted, block.sequence, timestamp, data)

    async def _send_tcp(self, raw: bytes, timeout: float) -> bytes | None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(raw)
            await writer.drain()
            try:
                return await asyncio.wait_for(reader.readuntil(b"\r"), timeout)
            except (TimeoutError, asyncio.IncompleteReadError):
                return None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send_udp(self, raw: bytes, timeout: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if not got.done():
                    got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(self.host, self.port))
        try:
            transport.sendto(raw)
            try:
                return await asyncio.wait_for(got, timeout)
            except TimeoutError:
                return None
        finally:
            transport.close()


def scenario_panel(ctx: RunContext, device_id: str, udp: bool = False) -> VirtualPanel:
    account = ctx.devices[device_id].identifiers.get("dc09")
    if account is None:
        raise KeyError(f"{device_id} has no dc09 identifier in the scenario")
    key = ctx.scratch.get(f"credential:{device_id}:dc09_key")
    return VirtualPanel(ctx.settings.dc09_host, ctx.settings.dc09_port, account, key, udp=udp)


@action("dc09.sia")
async def _dc09_sia(ctx: RunContext, step: Step) -> None:
    """A SIA DCS event from the device's panel (AES when the scenario gives it `credentials: {dc09_key}`):
    args `code`, `zone`, `area`, `udp`. Fails unless the receiver answers ACK."""
    args = dict(step.args)
    panel = scenario_panel(ctx, step.device or "", bool(args.pop("udp", False)))
    answer = await panel.send(panel.sia(args.pop("code", "PA"), **args))
    if answer is None or answer.token != "ACK":
        raise RuntimeError(f"the DC-09 receiver did not ACK: {answer}")


@action("dc09.cid")
async def _dc09_cid(ctx: RunContext, step: Step) -> None:
    """A Contact ID event in ADM-CID: args `qualifier`, `event`, `group`, `zone`, `udp`."""
    args = dict(step.args)
    panel = scenario_panel(ctx, step.device or "", bool(args.pop("udp", False)))
    answer = await panel.send(panel.cid(args.pop("qualifier", "1"), args.pop("event", "120"), **args))
    if answer is None or answer.token != "ACK":
        raise RuntimeError(f"the DC-09 receiver did not ACK: {answer}")
