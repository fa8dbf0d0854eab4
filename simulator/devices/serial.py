"""Virtual serial devices over pty pairs: a GPS, a GSM modem, a Contact ID receiver and a DIY button.

`VirtualSerialPort` owns the master side of an `os.openpty()` pair and publishes the slave under a stable
symlink path, like udev's /dev/serial/by-id/ names; `unplug()` closes the pair (the bridge's reads fail
as they do when a USB adapter is pulled) and `plug()` makes a fresh pair behind the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from dataclasses import dataclass, field
from pathlib import Path

from bridge.core.model import AlertKind
from bridge.infra.aio import stop_tasks
from device_adapters.decoders import contact_id, diy_frame
from simulator.scenario import RunContext, Step, action


class VirtualSerialPort:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._master: int | None = None
        self._slave: int | None = None
        self._rx: asyncio.Queue[bytes] = asyncio.Queue()
        self._buffer = b""

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def plug(self) -> None:
        if self.plugged:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before the bridge opens the port
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    def unplug(self) -> None:
        if self._master is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        asyncio.get_running_loop().remove_reader(self._master)
        os.close(self._master)
        if self._slave is not None:
            os.close(self._slave)
        self._master = self._slave = None

    def _on_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # EIO: nobody has the slave open right now
        if data:
            self._rx.put_nowait(data)

    def write(self, data: bytes) -> None:
        if self._master is None:
            raise ConnectionError("port unplugged")
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                continue  # tty buffer momentarily full: the bridge drains it
            view = view[n:]

    async def read(self, timeout: float = 5.0) -> bytes:
        if self._buffer:
            data, self._buffer = self._buffer, b""
            return data
        return await asyncio.wait_for(self._rx.get(), timeout)

    async def read_exactly(self, n: int, timeout: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout):
            while len(self._buffer) < n:
                self._buffer += await self._rx.get()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    async def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Bytes up to `marker` (dropped), e.g. an SMS text ended by Ctrl-Z."""
        async with asyncio.timeout(timeout):
            while (idx := self._buffer.find(marker)) < 0:
                self._buffer += await self._rx.get()
        data, self._buffer = self._buffer[:idx], self._buffer[idx + len(marker) :]
        return data

    async def readline(self, timeout: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout):
            while True:
                idx = self._buffer.find(b"\r")
                if idx >= 0:
                    line, self._buffer = self._buffer[:idx], self._buffer[idx + 1 :]
                    line = line.strip()
                    if line:
                        return line
                    continue
                self._buffer += await self._rx.get()

    async def __aenter__(self) -> VirtualSerialPort:
        self.plug()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.unplug()


# -- devices ------------------------------------------------------------------------------------------
@dataclass
class VirtualGps:
    port: VirtualSerialPort

    def send(self, sentence: str) -> None:
        self.port.write(sentence.encode() + b"\r\n")


@dataclass
class VirtualAlarmReceiver:
    """The serial output of a Contact ID receiver: one line per event, optional ACK/NAK back."""

    port: VirtualSerialPort

    def send(self, line: str) -> None:
        self.port.write(line.encode() + b"\r\n")

    def event(self, account: str, qualifier: str, code: str, group: str = "01", zone: str = "001") -> str:
        body = f"{account}18{qualifier}{code}{group}{zone}"
        line = f"{account} 18 {qualifier} {code} {group} {zone} {contact_id.checksum_digit(body)}"
        self.send(line)
        return line

    async def reply(self, timeout: float = 5.0) -> bytes:
        return await self.port.read_exactly(1, timeout)


@dataclass
class VirtualDiyButton:
    port: VirtualSerialPort
    unit: int
    boot: int = 1
    seq: int = 0

    def frame(self, kind: AlertKind = AlertKind.sos, **kw: object) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        return diy_frame.encode_alert(self.unit, self.boot, self.seq, kind, **kw)  # type: ignore[arg-type]

    async def press(self, kind: AlertKind = AlertKind.sos, retries: int = 3, **kw: object) -> bytes:
        """Send an alert and wait for the bridge's answer (06 SEQ or 15 SEQ CODE), retrying like firmware."""
        raw = self.frame(kind, **kw)
        return await self.send_until_answered(raw, retries)

    async def send_until_answered(self, raw: bytes, retries: int = 3, timeout: float = 3.0) -> bytes:
        for _ in range(retries):
            self.port.write(raw)
            try:
                head = await self.port.read_exactly(3, timeout)
            except TimeoutError:
                continue
            if head[0] == diy_frame.NAK:
                return head + await self.port.read_exactly(1, timeout)
            return head
        raise TimeoutError("no answer from the bridge")


@dataclass
class StoredSms:
    sender: str
    scts: str
    body: str
    status: str = "REC UNREAD"


@dataclass
class VirtualGsmModem:
    """Enough of a TS 27.005 text-mode modem: AT, ATE0, +CMGF, +CNMI, +CMGR, +CMGD, +CMGL, +CMTI/+CMT."""

    port: VirtualSerialPort
    storage: dict[int, StoredSms] = field(default_factory=dict)
    text_mode: bool = False
    cnmi_mt: int = 0
    commands: list[str] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)  # (number, text) sent with AT+CMGS
    fail_sends: int = 0  # answer the next N AT+CMGS with +CMS ERROR (network trouble)
    _task: asyncio.Task[None] | None = None
    _next_index: int = 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        if self._task:
            await stop_tasks([self._task])

    def _send(self, *lines: str) -> None:
        if self.port.plugged:
            self.port.write(b"".join(b"\r\n" + line.encode() + b"\r\n" for line in lines))

    async def _serve(self) -> None:
        while True:
            try:
                line = (await self.port.readline(timeout=3600)).decode()
            except (TimeoutError, ConnectionError):
                continue
            self.commands.append(line)
            if line.upper().startswith("AT+CMGS="):
                await self._cmgs(line[8:].strip('"'))
                continue
            self._send(*self.answer(line))

    async def _cmgs(self, number: str) -> None:
        """`> ` prompt, the text up to Ctrl-Z, then `+CMGS: <mr>` and OK (TS 27.005 3.5.1)."""
        if self.port.plugged:
            self.port.write(b"\r\n> ")
        try:
            text = (await self.port.read_until(b"\x1a", timeout=5)).decode("ascii", "replace")
        except TimeoutError:
            self._send("+CMS ERROR: 304")
            return
        if self.fail_sends > 0:
            self.fail_sends -= 1
            self._send("+CMS ERROR: 500")
            return
        self.sent.append((number, text))
        self._send(f"+CMGS: {len(self.sent)}", "OK")

    def answer(self, cmd: str) -> list[str]:
        up = cmd.upper()
        if up in ("AT", "ATE0", "ATE1"):
            return ["OK"]
        if up.startswith("AT+CMGF="):
            self.text_mode = up.endswith("1")
            return ["OK"]
        if up.startswith("AT+CNMI="):
            parts = up[8:].split(",")
            self.cnmi_mt = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            return ["OK"]
        if up.startswith("AT+CMGR="):
            sms = self.storage.get(int(up[8:]))
            if sms is None:
                return ["OK"]
            lines = [f'+CMGR: "{sms.status}","{sms.sender}",,"{sms.scts}"', *sms.body.split("\n"), "OK"]
            sms.status = "REC READ"
            return lines
        if up.startswith("AT+CMGD="):
            self.storage.pop(int(up[8:].split(",")[0]), None)
            return ["OK"]
        if up.startswith("AT+CMGL"):
            out: list[str] = []
            for idx, sms in sorted(self.storage.items()):
                out += [f'+CMGL: {idx},"{sms.status}","{sms.sender}",,"{sms.scts}"', *sms.body.split("\n")]
            return [*out, "OK"]
        return ["ERROR"]

    def receive_sms(self, sender: str, body: str, scts: str = "26/11/28,21:00:00+00") -> int | None:
        """A text arrives from the network: stored and announced (+CMTI), or routed directly (+CMT)."""
        if self.cnmi_mt == 2:
            self._send(f'+CMT: "{sender}",,"{scts}"', body)
            return None
        idx = self._next_index
        self._next_index += 1
        self.storage[idx] = StoredSms(sender, scts, body)
        if self.cnmi_mt == 1:
            self._send(f'+CMTI: "SM",{idx}')
        return idx


# -- scenario actions ------------------------------------------------------------------------------------
def _port(ctx: RunContext, name: str) -> VirtualSerialPort:
    ports = ctx.scratch.get("serial_ports")
    if not ports:
        raise RuntimeError("this scenario needs the virtual serial ports (run it with the embedded stack)")
    port: VirtualSerialPort = ports[name]
    return port


@action("serial.sms")
async def _sms(ctx: RunContext, step: Step) -> None:
    """A tracker's text arrives at the GSM modem. Args: sender, body."""
    modem: VirtualGsmModem = ctx.scratch["gsm_modem"]
    modem.receive_sms(step.args["sender"], step.args["body"])


@action("serial.contact_id")
async def _contact_id(ctx: RunContext, step: Step) -> None:
    """An alarm receiver passes on a Contact ID event. Args: account, qualifier, code, zone."""
    panel = VirtualAlarmReceiver(_port(ctx, "contactid"))
    a = step.args
    panel.event(str(a["account"]), str(a.get("qualifier", "1")), str(a["code"]), zone=str(a.get("zone", "001")))
    if await panel.reply() != b"\x06":
        raise RuntimeError("the alarm receiver line was not acknowledged")


@action("serial.nmea")
async def _nmea(ctx: RunContext, step: Step) -> None:
    VirtualGps(_port(ctx, "nmea")).send(step.args["sentence"])


@action("serial.diy")
async def _diy(ctx: RunContext, step: Step) -> None:
    """A DIY button press; the ACK byte comes back only once the alert is stored. Args: unit (hex), kind."""
    button = VirtualDiyButton(
        _port(ctx, "diy"), unit=int(str(step.args["unit"]), 16), boot=int(step.args.get("boot", 1))
    )
    answer = await button.press(AlertKind(step.args.get("kind", "sos")))
    if not answer or answer[0] != 0x06:
        raise RuntimeError(f"DIY button got {answer!r} instead of an ACK")
