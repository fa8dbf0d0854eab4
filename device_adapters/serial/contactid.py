"""Contact ID lines from an alarm receiver's serial output.

The account in the line identifies the premises (Device.identifiers["contact_id"]); a port bound to a
single device (option device=, or identifiers.serial_port) is the fallback. With option `ack=1` the
bridge answers each line with ACK (0x06) once it is stored, or NAK (0x15) when it is refused.
"""

from __future__ import annotations

from bridge.decoding import DecodeError, Frame
from device_adapters.serial.base import Outcome, PortHandler, is_checksum_error, log
from device_adapters.serial.link import Connection

ACK, NAK = b"\x06", b"\x15"


class ContactIdHandler(PortHandler):
    @property
    def ack(self) -> bool:
        return self.port.options.get("ack", "0") in ("1", "true", "yes")

    async def session(self, conn: Connection) -> None:
        while True:
            line = (await conn.readline()).decode("ascii", "replace")
            reply = await self.handle_line(line)
            if reply is not None and self.ack:
                await conn.write(reply)

    async def handle_line(self, line: str) -> bytes | None:
        frame = Frame(payload=line.encode(), meta={"port": self.port.path})
        try:
            events = self.decode(frame, self.default_profile)  # type: ignore[arg-type]
        except DecodeError as exc:
            self.refuse("bad_checksum" if is_checksum_error(exc) else "malformed", error=str(exc)[:100])
            return NAK
        account = line.replace(" ", "")[:-12]
        device = await self.ctx.store.find_device("contact_id", account) or await self.port_device()
        if device is None:
            self.refuse("unknown_device", account=account)
            return NAK
        try:
            events = await self.redecode_for(device, frame, events)
        except DecodeError as exc:
            self.refuse("malformed", error=str(exc)[:100])
            return NAK
        if not events:
            log.debug("contact id event not mapped", extra={"device_id": device.device_id})
            return ACK  # understood, nothing for the police (burglary, open/close ...)
        outcome, results, _ = await self.submit_all(device, events, line)
        if outcome is Outcome.failed:
            return None  # no kiss-off: the receiver keeps the event and repeats it
        log.info(
            "contact id event",
            extra={"device_id": device.device_id, "alert_ids": [r.alert_id for r in results]},
        )
        return ACK if outcome is Outcome.stored else NAK
