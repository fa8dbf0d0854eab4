"""What every serial protocol handler shares: its port's Claim and the one way into the ingress.

A handler reads frames off the wire (framing is its job: lines, CRC-checked binary frames, AT dialogue),
says who the frame claims to come from, hands it to the ingress and answers on the wire from the Receipt
(ACK/NAK bytes, deleting an SMS only once it is stored).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bridge.devices.decoding import Frame
from bridge.ingress import Claim, Receipt
from device_adapters.serial.config import PortConfig
from device_adapters.serial.link import Connection

if TYPE_CHECKING:
    from bridge.ingress.transport import AdapterContext

log = logging.getLogger("sosbridge.serial")

TRANSPORT = "serial"


class PortHandler:
    def __init__(self, port: PortConfig, ctx: AdapterContext) -> None:
        self.port = port
        self.ctx = ctx
        if port.default_profile is not None and ctx.profiles.get(port.default_profile) is None:
            raise ValueError(f"serial port {port.path}: no profile {port.default_profile!r}")

    async def session(self, conn: Connection) -> None:
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------------------
    def refuse(self, code: str, **extra: object) -> None:
        """Count a frame refused by the framing itself (bad checksum, truncated) before the ingress."""
        self.ctx.metrics.rejected(TRANSPORT, code)
        log.info("serial frame refused", extra={"port": self.port.path, "reason": code, **extra})

    def claim(self, *identifiers: tuple[str, str]) -> Claim:
        """Identifiers from the frame first; then the device the port is bound to (option `device=`, or a
        device registered with identifier serial_port=<path>)."""
        return Claim(
            TRANSPORT,
            device_id=self.port.device_id,
            identifiers=(*identifiers, ("serial_port", self.port.path)),
            fallback_profile=self.port.default_profile,
            companion=True,
            label=f"{identifiers[0][0]} {identifiers[0][1]!r}" if identifiers else f"port {self.port.path}",
        )

    def meta(self, **extra: str) -> dict[str, str]:
        return {"port": self.port.path, "protocol": self.port.protocol, **extra}

    async def receive(self, payload: bytes, claim: Claim, raw: str, **meta: str) -> Receipt:
        return await self.ctx.ingress.receive(Frame(payload=payload, meta=self.meta(**meta)), claim, raw=raw)
