"""Serial-attached devices: GSM modems (SMS), NMEA GPS, Contact ID receivers and DIY framed buttons.

Ports come from `SOSBRIDGE_SERIAL_PORTS` (see config.py); each runs in its own reconnecting task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bridge.infra.aio import stop_tasks
from bridge.ingress.transport import BaseAdapter
from device_adapters.serial.base import PortHandler
from device_adapters.serial.config import PortConfig, parse_ports
from device_adapters.serial.contactid import ContactIdHandler
from device_adapters.serial.diy import DiyHandler
from device_adapters.serial.gsm import GsmHandler
from device_adapters.serial.link import SerialLink
from device_adapters.serial.nmea import NmeaHandler
from device_adapters.serial.settings import SerialSettings

if TYPE_CHECKING:
    from bridge.app.config import Settings
    from bridge.ingress.transport import AdapterContext

log = logging.getLogger("sosbridge.serial")

HANDLERS: dict[str, type[PortHandler]] = {
    "gsm": GsmHandler,
    "nmea": NmeaHandler,
    "contactid": ContactIdHandler,
    "diy": DiyHandler,
}

__all__ = ["HANDLERS", "PortConfig", "SerialAdapter", "parse_ports"]


class SerialAdapter(BaseAdapter):
    name = "serial"
    transports = {"serial": frozenset({"serial_ack", "sms"})}

    def __init__(self) -> None:
        self.links: dict[str, SerialLink] = {}
        self.handlers: dict[str, PortHandler] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def enabled(self, settings: Settings) -> bool:
        return bool(settings.section(SerialSettings).ports)

    async def start(self, ctx: AdapterContext) -> None:
        ports = parse_ports(ctx.settings.section(SerialSettings).ports)
        for port in ports:
            handler = HANDLERS[port.protocol](port, ctx)
            link = SerialLink(port.path, port.baud)
            self.links[port.path], self.handlers[port.path] = link, handler
            self._tasks.append(asyncio.create_task(link.run(handler.session), name=f"serial:{port.path}"))
            log.info("serial port configured", extra={"port": port.path, "protocol": port.protocol})

    async def stop(self) -> None:
        for link in self.links.values():
            link.stop()
        await stop_tasks(self._tasks)
        self._tasks.clear()
