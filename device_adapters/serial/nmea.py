"""NMEA GPS on a serial port: valid fixes become `location` observations for the port's device."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from device_adapters.serial.base import PortHandler, log
from device_adapters.serial.link import Connection


class NmeaHandler(PortHandler):
    last_date: str | None = None
    _last_sent = 0.0

    @property
    def interval_s(self) -> float:
        return float(self.port.options.get("interval", "10"))

    async def session(self, conn: Connection) -> None:
        while True:
            line = (await conn.readline()).decode("ascii", "replace")
            if not line.startswith("$"):
                continue  # partial sentence after (re)connecting, or module chatter
            await self.handle_line(line)

    async def handle_line(self, line: str) -> None:
        if "RMC," in line[:7]:
            # GGA carries no date: remember the last RMC's (from its ddmmyy field) for the next GGA.
            fields = line.split(",")
            if len(fields) > 9 and len(fields[9]) == 6 and fields[9].isdigit():
                d = fields[9]
                century = 1900 if int(d[4:6]) >= 80 else 2000  # 80-99: a receiver's clock from the 1990s
                self.last_date = f"{century + int(d[4:6])}-{d[2:4]}-{d[0:2]}"
        if not any(tag in line[:7] for tag in ("RMC,", "GGA,", "GLL,", "GNS,")):
            return  # satellites in view, DOP ...: not a position
        now = time.monotonic()
        if now - self._last_sent < self.interval_s:
            return  # a GPS talks at 1 Hz; the platform needs a fix every few seconds at most
        utc_date = self.last_date or datetime.now(UTC).date().isoformat()
        receipt = await self.receive(line.encode(), self.claim(), raw=line, utc_date=utc_date,
                                     received_at=datetime.now(UTC).isoformat())
        if receipt.stored:
            self._last_sent = now
        log.debug("gps sentence", extra={"status": receipt.status, "code": receipt.code})
