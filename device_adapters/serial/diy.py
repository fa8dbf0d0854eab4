"""DIY framed panic buttons (hardware/diy-frame.md): CRC-checked frames, ACK only after storage."""

from __future__ import annotations

from bridge.devices.decoding import ChecksumError, DecodeError
from device_adapters.decoders import diy_frame
from device_adapters.serial.base import PortHandler, log
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
        try:
            header = diy_frame.parse(raw)
        except DecodeError as exc:
            # No reply to a corrupted frame: its SEQ cannot be trusted; the button retries on its own.
            self.refuse("bad_checksum" if isinstance(exc, ChecksumError) else "malformed",
                        error=str(exc)[:100])
            return None
        receipt = await self.receive(raw, self.claim(("diy_unit", header.unit_ref)), raw=raw.hex())
        if receipt.status == "not_stored":
            return None  # no ACK: the button keeps the press and sends it again
        if receipt.status == "refused":
            code = {"unknown_device": diy_frame.NAK_UNKNOWN_DEVICE, "invalid": diy_frame.NAK_BAD_FRAME}
            return diy_frame.nak(header.seq, code.get(receipt.code, diy_frame.NAK_REFUSED))
        log.info("diy frame handled", extra={"status": receipt.status,
                                             "alert_ids": [r.alert_id for r in receipt.results]})
        return diy_frame.ack(header.seq)
