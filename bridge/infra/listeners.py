"""Who may hold a connection to a TCP/UDP listener: an optional source allow-list (CIDRs) and a cap on
connections per source address. Pure bookkeeping; the listener asks `admit(host)` when a connection
arrives and calls `release(host)` when it closes. A refusal names its reason (`not_allowed`,
`too_many_from_source`) so the listener can count it. See docs/operations/security.md.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """`10.64.0.0/10, 192.0.2.7` → networks (a bare address is a /32 or /128). ValueError names the bad entry."""
    out: list[Network] = []
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an address or CIDR network") from None
    return tuple(out)


def host_of(peername: object) -> str:
    """The address part of an asyncio peername ((host, port) or (host, port, flow, scope)); '' if none."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return ""


def allowed(host: str, networks: tuple[Network, ...]) -> bool:
    """True when no allow-list is set, or `host` is inside one of its networks."""
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


class SourceGuard:
    """Connections per source address, capped, behind an optional allow-list."""

    def __init__(self, per_source: int, allow: tuple[Network, ...] = ()) -> None:
        self.per_source = per_source
        self.allow = allow
        self._open: Counter[str] = Counter()

    def admit(self, host: str) -> str | None:
        """None: admitted (and counted); else the refusal's reason."""
        if not allowed(host, self.allow):
            return "not_allowed"
        if self._open[host] >= self.per_source:
            return "too_many_from_source"
        self._open[host] += 1
        return None

    def release(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]

    def open_from(self, host: str) -> int:
        return self._open[host]
