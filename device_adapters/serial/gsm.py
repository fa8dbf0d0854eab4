"""A GSM modem in SMS text mode (3GPP TS 27.005): tracker SOS texts become alerts.

Default `mode=stored`: AT+CNMI=2,1 makes the modem store each SMS and announce `+CMTI: "SM",<i>`; we read
it with AT+CMGR and delete it with AT+CMGD only after its alert is stored, so an SMS survives a crash or a
store outage (on reconnect, AT+CMGL="ALL" picks up whatever is still on the SIM). `mode=direct` routes
texts straight to us as `+CMT:` (nothing to delete; a crash at the wrong moment loses that text).
The alert's state is texted back to trackers whose device record allows it (sms_reply.py; option
`replies=0` turns that off on a port, e.g. a second modem).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from device_adapters.serial.base import PortHandler, log
from device_adapters.serial.link import Connection, LinkLost
from device_adapters.serial.sms_reply import SmsReplier

PROMPT_S = 0.3  # a modem shows the AT+CMGS `> ` prompt within milliseconds

_FINAL = re.compile(r"^(OK|ERROR|\+CMS ERROR:.*|\+CME ERROR:.*)$")
_SCTS_LIKE = re.compile(r"^\d{2}/\d{2}/\d{2},")


@dataclass(frozen=True)
class Sms:
    sender: str
    scts: str
    body: str
    index: int | None = None


def _fields(text: str) -> list[str]:
    return next(csv.reader([text], skipinitialspace=True))


def parse_header(line: str) -> tuple[str, str] | None:
    """(sender, scts) from `+CMT:`/`+CMGR:`/`+CMGL:` headers, tolerant of the alpha field's absence."""
    _, _, rest = line.partition(":")
    fields = _fields(rest.strip())
    # +CMGL has a leading index, +CMGR/+CMGL a status; the sender is the first field that looks like one.
    fields = [f for f in fields if not f.isdigit() or len(f) > 3]
    fields = [f for f in fields if not f.upper().startswith(("REC ", "STO "))]
    if not fields or not re.fullmatch(r"\+?[0-9*#]{2,20}", fields[0]):
        return None
    scts = next((f for f in fields[1:] if _SCTS_LIKE.match(f)), "")
    return fields[0], scts


def parse_listing(lines: list[str]) -> list[Sms]:
    """The body of an AT+CMGL="ALL" reply (text mode)."""
    out: list[Sms] = []
    current: tuple[int, str, str] | None = None
    body: list[str] = []
    for line in [*lines, "+CMGL: end"]:
        if line.startswith("+CMGL:"):
            if current is not None:
                out.append(Sms(current[1], current[2], "\n".join(body), current[0]))
            current, body = None, []
            head = parse_header(line)
            idx = line.partition(":")[2].split(",")[0].strip()
            if head and idx.isdigit():
                current = (int(idx), head[0], head[1])
        elif current is not None:
            body.append(line)
    return out


def msisdn_variants(number: str, country_code: str | None) -> list[str]:
    digits = re.sub(r"[^\d]", "", number)
    variants = [number, "+" + digits, digits]
    if country_code and number.startswith("0") and not number.startswith("00"):
        variants.append(f"+{country_code}{digits[1:]}")
    if number.startswith("00"):
        variants.append("+" + digits[2:])
    return list(dict.fromkeys(variants))


class GsmHandler(PortHandler):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._responses: asyncio.Queue[str | None] = asyncio.Queue()
        self._indications: asyncio.Queue[Sms | int | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self._retry_s: dict[int | Sms, float] = {}  # texts not stored yet -> their current backoff
        self.replier = SmsReplier(self)
        # The person's emergency contacts may be texted through this modem (bridge/alerts/emergency_contacts.py).
        self.sms_gateway = getattr(self.ctx, "sms_gateway", None)
        if self.sms_gateway is not None:
            self.sms_gateway.declare()
        self._sms_sender: Callable[[str, str], Awaitable[None]] | None = None

    @property
    def direct(self) -> bool:
        return self.port.options.get("mode", "stored") == "direct"

    # -- the modem dialogue ---------------------------------------------------------------------------
    async def _reader(self, conn: Connection) -> None:
        try:
            while True:
                line = (await conn.readline()).decode("utf-8", "replace")
                if line.startswith("+CMTI:"):
                    idx = line.rsplit(",", 1)[-1].strip()
                    if idx.isdigit():
                        self._indications.put_nowait(int(idx))
                elif line.startswith("+CMT:"):
                    head = parse_header(line)
                    body = await self._direct_body(conn)
                    if head:
                        self._indications.put_nowait(Sms(head[0], head[1], body))
                else:
                    self._responses.put_nowait(line)
        except LinkLost:
            pass
        finally:
            self._responses.put_nowait(None)
            self._indications.put_nowait(None)

    async def _direct_body(self, conn: Connection) -> str:
        # A +CMT body has no terminator; a multi-line text ends when the modem goes quiet.
        lines = [(await conn.readline()).decode("utf-8", "replace")]
        while True:
            try:
                nxt = (await asyncio.wait_for(conn.readline(), 0.3)).decode("utf-8", "replace")
            except TimeoutError:
                break
            if nxt.startswith("+") or _FINAL.match(nxt):
                conn.unread(nxt.encode() + b"\r\n")
                break
            lines.append(nxt)
        return "\n".join(lines)

    async def command(self, conn: Connection, cmd: str, timeout: float = 5.0, then: bytes | None = None) -> list[str]:
        """Send one AT command; return the lines before OK. Raises LinkLost on silence, ModemError on
        ERROR. `then`: what follows the modem's `> ` prompt (the text of AT+CMGS, ended by Ctrl-Z); the
        prompt ends no line, so it is given PROMPT_S to appear rather than read."""
        async with self._lock:
            while not self._responses.empty():
                self._responses.get_nowait()
            await conn.write(cmd.encode() + b"\r")
            if then is not None:
                await asyncio.sleep(PROMPT_S)
                await conn.write(then)
            lines: list[str] = []
            while True:
                try:
                    line = await asyncio.wait_for(self._responses.get(), timeout)
                except TimeoutError:
                    raise LinkLost(f"modem did not answer {cmd}") from None
                if line is None:
                    raise LinkLost("modem gone")
                if line == cmd or line.startswith(">"):
                    continue  # echo before ATE0 took effect; the AT+CMGS prompt
                if _FINAL.match(line):
                    if line != "OK":
                        raise ModemError(f"{cmd}: {line}")
                    return lines
                lines.append(line)

    async def send_sms(self, conn: Connection, number: str, text: str) -> None:
        """One text (AT+CMGS, text mode); raises ModemError/LinkLost when the modem does not take it."""
        if not re.fullmatch(r"\+?[0-9]{3,20}", number):
            raise ModemError("not a phone number")
        body = text.encode("ascii", "replace")[:160]
        try:
            await self.command(conn, f'AT+CMGS="{number}"', timeout=60.0, then=body + b"\x1a")
        except ModemError as exc:  # its text names the command, so the number: keep only the modem's answer
            raise ModemError("AT+CMGS: " + str(exc).rsplit(": ", 1)[-1]) from None
        except LinkLost:
            raise LinkLost("modem did not answer AT+CMGS") from None

    async def session(self, conn: Connection) -> None:
        self._responses = asyncio.Queue()
        self._indications = asyncio.Queue()
        reader = asyncio.create_task(self._reader(conn))
        replies: asyncio.Task[None] | None = None
        if self.port.options.get("replies", "1") not in ("0", "false", "no"):
            replies = asyncio.create_task(self.replier.run(conn), name=f"sms-replies:{self.port.path}")
        try:
            await self.command(conn, "AT")
            await self.command(conn, "ATE0")
            await self.command(conn, "AT+CMGF=1")
            await self.command(conn, "AT+CNMI=2,2,0,0,0" if self.direct else "AT+CNMI=2,1,0,0,0")
            if not self.direct:
                for sms in parse_listing(await self.command(conn, 'AT+CMGL="ALL"', timeout=15)):
                    await self._handle_stored(conn, sms)
            self.ready.set()
            if self.sms_gateway is not None:
                self._sms_sender = functools.partial(self.send_sms, conn)
                self.sms_gateway.connect(self._sms_sender)
            while True:
                item = await self._indications.get()  # a service loop's wait: None or the stop ends it
                if item is None:
                    return
                if isinstance(item, Sms):
                    if not await self.handle_sms(item):
                        self._retry_later(item)  # direct mode: only this memory holds it
                else:
                    await self._read_stored(conn, item)
        except ModemError as exc:
            log.error("modem refused a command", extra={"port": self.port.path, "error": str(exc)[:200]})
            raise LinkLost(str(exc)) from exc
        finally:
            self.ready.clear()
            if self.sms_gateway is not None and self._sms_sender is not None:
                self.sms_gateway.disconnect(self._sms_sender)
                self._sms_sender = None
            if replies is not None:
                replies.cancel()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _read_stored(self, conn: Connection, index: int) -> None:
        lines = await self.command(conn, f"AT+CMGR={index}")
        if not lines or not lines[0].startswith("+CMGR:"):
            return  # already deleted
        head = parse_header(lines[0])
        if head is None:
            # `+CMGR: 0,,24` is PDU mode: someone reset AT+CMGF; reconnecting sets text mode again.
            log.error("SMS in PDU mode; not decodable", extra={"port": self.port.path, "index": index})
            return
        await self._handle_stored(conn, Sms(head[0], head[1], "\n".join(lines[1:]), index))

    async def _handle_stored(self, conn: Connection, sms: Sms) -> None:
        if await self.handle_sms(sms):
            self._retry_s.pop(sms.index if sms.index is not None else sms, None)
            if sms.index is not None:
                await self.command(conn, f"AT+CMGD={sms.index}")
            return
        self._retry_later(sms)

    def _retry_later(self, sms: Sms) -> None:
        """Not stored (store outage): the text stays on the SIM and is read again after a backoff."""
        key: int | Sms = sms.index if sms.index is not None else sms
        delay = min(self._retry_s.get(key, 0.5) * 2, 30.0)
        self._retry_s[key] = delay
        queue = self._indications
        asyncio.get_running_loop().call_later(delay, queue.put_nowait, key)

    # -- one text -------------------------------------------------------------------------------------
    async def handle_sms(self, sms: Sms) -> bool:
        """True when the text may be deleted: stored, or refused for good (unknown sender, not SOS)."""
        senders = tuple(("msisdn", v) for v in msisdn_variants(sms.sender, self.port.options.get("cc")))
        claim = self.claim(*senders)
        # The number is personal data: a refusal names the port, never the sender.
        claim = dataclasses.replace(claim, label="SMS sender")
        receipt = await self.receive(sms.body.encode(), claim, raw=sms.body, sender=sms.sender, scts=sms.scts)
        device = receipt.device
        if receipt.status == "unmatched" and device is not None and device.sms_replies:
            # Not an SOS or status text: from a tracker that takes texts both ways, the person's answer to a
            # platform message. It reaches the platform as a message when the device has an open alert.
            digest = hashlib.sha256(f"{sms.scts}|{sms.body}".encode()).hexdigest()[:24]
            doc = json.dumps({"text": sms.body, "message_id": f"sms-{digest}"}).encode()
            reply = await self.ctx.ingress.receive_text(claim, doc)
            if reply.status != "refused" or reply.code not in ("nothing_open", "invalid_text"):
                receipt = reply
        log.info("SMS handled", extra={"device_id": receipt.device.device_id if receipt.device else None,
                                       "status": receipt.status, "code": receipt.code,
                                       "alert_ids": [r.alert_id for r in receipt.results]})
        return receipt.acknowledge


class ModemError(RuntimeError):
    pass
