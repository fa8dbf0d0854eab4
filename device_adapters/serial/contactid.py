"""Contact ID lines from an alarm receiver's serial output.

The account in the line identifies the premises (Device.identifiers["contact_id"]); a port bound to a
single device (option device=, or identifiers.serial_port) is the fallback. With option `ack=1` (or a
profile whose `ack` is `serial_ack`) the bridge answers each line with ACK (0x06) once it is stored or
understood, or NAK (0x15) when it is refused; a line that could not be stored gets no answer, so the
receiver keeps the event and repeats it.
"""

from __future__ import annotations

from bridge.devices.decoding import ChecksumError, DecodeError
from bridge.ingress import Receipt
from device_adapters.decoders import contact_id
from device_adapters.serial.base import PortHandler, log
from device_adapters.serial.link import Connection

ACK, NAK = b"\x06", b"\x15"


class ContactIdHandler(PortHandler):
    @property
    def ack(self) -> bool:
        return self.port.options.get("ack", "0") in ("1", "true", "yes")

    async def session(self, conn: Connection) -> None:
        while True:
            line = (await conn.readline()).decode("ascii", "replace")
            reply, receipt = await self.handle_line(line)
            wants_ack = self.ack or (receipt is not None and receipt.profile is not None
                                     and receipt.profile.ack == "serial_ack")
            if reply is not None and wants_ack:
                await conn.write(reply)

    async def handle_line(self, line: str) -> tuple[bytes | None, Receipt | None]:
        try:
            account = contact_id.parse_line(line)["account"]
        except DecodeError as exc:
            # Framing: a corrupted line names no trustworthy account; the receiver repeats on NAK.
            self.refuse("bad_checksum" if isinstance(exc, ChecksumError) else "malformed",
                        error=str(exc)[:100])
            return NAK, None
        receipt = await self.receive(line.encode(), self.claim(("contact_id", account)), raw=line)
        if receipt.status == "not_stored":
            return None, receipt  # no kiss-off: the receiver keeps the event and repeats it
        log.info("contact id event", extra={"status": receipt.status, "code": receipt.code,
                                            "alert_ids": [r.alert_id for r in receipt.results]})
        # An event no mapping covers (burglary, open/close) was received fine and is counted as unmatched:
        # kiss it off, or the receiver would repeat it for ever.
        return (NAK if receipt.status == "refused" else ACK), receipt
