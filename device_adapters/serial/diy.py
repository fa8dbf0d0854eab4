"""DIY framed panic buttons (hardware/diy-frame.md): CRC-checked frames, ACK only after storage."""

from __future__ import annotations

from bridge.decoding import DecodeError, Frame
from device_adapters.decoders import diy_frame
from device_adapters.serial.base import Outcome, PortHandler, is_checksum_error, log
from device_adapters.serial.link import Connection


class DiyHandler(PortHandler):
    async def session(self, conn: Connection) -> None:
        buffer = b""
        while True:
            buffer += await conn.read()
            frames, buffer, _skipped = diy_frame.split_frames(buffer)
            for raw in frames:
                reply = await self.handle_frame(raw)
                if reply:
                    await conn.write(reply)

    async def handle_frame(self, raw: bytes) -> bytes | None:
        frame = Frame(payload=raw, meta={"port": self.port.path})
        try:
            header = diy_frame.parse(raw)
        except DecodeError as exc:
            # No reply to a corrupted frame: its SEQ cannot be trusted; the button retries on its own.
            self.refuse("bad_checksum" if is_checksum_error(exc) else "malformed", error=str(exc)[:100])
            return None
        device = await self.ctx.store.find_device("diy_unit", header.unit_ref) or await self.port_device()
        if device is None:
            self.refuse("unknown_device", unit=header.unit_ref)
            return diy_frame.nak(header.seq, diy_frame.NAK_UNKNOWN_DEVICE)
        try:
            events = self.decode(frame, self.profile_for(device))
        except DecodeError as exc:
            self.refuse("malformed", error=str(exc)[:100])
            return diy_frame.nak(header.seq, diy_frame.NAK_BAD_FRAME)
        outcome, results, _ = await self.submit_all(device, events, raw.hex())
        if outcome is Outcome.failed:
            return None
        if outcome is Outcome.refused:
            return diy_frame.nak(header.seq, diy_frame.NAK_REFUSED)
        log.info(
            "diy frame stored",
            extra={"device_id": device.device_id, "alert_ids": [r.alert_id for r in results]},
        )
        return diy_frame.ack(header.seq)
