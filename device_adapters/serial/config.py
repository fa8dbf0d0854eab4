"""`SOSBRIDGE_SERIAL_PORTS`: `protocol=path[?option=value&...][,protocol=path...]`.

Options: `baud` (default per protocol), `device` (the registered device this port belongs to: a GPS,
a DIY button on its own cable), `profile` (profile id used when the device has none), `interval`
(NMEA: minimum seconds between submitted fixes), `mode` (GSM: `stored` = +CMTI then AT+CMGR, the
default, or `direct` = +CMT). Example:
`gsm=/dev/ttyUSB2?baud=115200,nmea=/dev/serial/by-id/usb-u-blox?device=pendant-7,diy=/dev/ttyACM0`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

Protocol = Literal["gsm", "nmea", "contactid", "diy"]
PROTOCOLS: tuple[Protocol, ...] = ("gsm", "nmea", "contactid", "diy")

DEFAULT_BAUD: dict[str, int] = {"gsm": 115200, "nmea": 9600, "contactid": 9600, "diy": 9600}
class SerialConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PortConfig:
    protocol: Protocol
    path: str
    baud: int
    device_id: str | None = None
    profile_id: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def default_profile(self) -> str | None:
        """The operator's choice for devices naming no profile; else the `fallback` profile whose
        `match: {protocol: ...}` covers this port (hardware/profiles)."""
        return self.profile_id


def parse_ports(spec: str | None) -> list[PortConfig]:
    ports: list[PortConfig] = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        proto, sep, rest = item.partition("=")
        proto = proto.strip().lower()
        if not sep or proto not in PROTOCOLS:
            raise SerialConfigError(f"serial port {item!r}: expected one of {', '.join(PROTOCOLS)}=path")
        path, _, query = rest.partition("?")
        if not path:
            raise SerialConfigError(f"serial port {item!r}: no path")
        opts = dict(parse_qsl(query, keep_blank_values=True))
        try:
            baud = int(opts.pop("baud", DEFAULT_BAUD[proto]))
        except ValueError:
            raise SerialConfigError(f"serial port {item!r}: baud must be a number") from None
        ports.append(
            PortConfig(
                protocol=proto,  # type: ignore[arg-type]
                path=path,
                baud=baud,
                device_id=opts.pop("device", None) or None,
                profile_id=opts.pop("profile", None) or None,
                options=opts,
            )
        )
    return ports
