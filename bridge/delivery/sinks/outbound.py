"""Where a contact-supplied URL (an emergency contact's webhook) may be sent: never into the bridge's own
networks. Loopback, link-local (and the cloud metadata addresses in it), private, carrier-grade NAT,
multicast, reserved and unspecified addresses are refused unless `SOSBRIDGE_NOTIFY_WEBHOOK_ALLOW` names
them. Checked on the address actually connected to, after resolution at send time (a name that
resolves to a public address at registration and to 127.0.0.1 later is refused then), by `GuardedResolver`
(bridge/delivery/sinks/guarded_resolver.py) for names and `refused_literal` for IP literals, which aiohttp never
resolves. Redirects stay off.
See docs/operations/security.md ("Outbound to contact webhooks").
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from bridge.infra.listeners import Network, allowed

# Cloud metadata services (named as such even inside the link-local range; Alibaba Cloud, AWS over IPv6).
METADATA = (ipaddress.ip_network("169.254.169.254/32"), ipaddress.ip_network("100.100.100.200/32"),
            ipaddress.ip_network("fd00:ec2::254/128"))
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598


def refused_address(host: str, allow: tuple[Network, ...]) -> str | None:
    """Why an address may not be sent to (None: it may). Pure."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return "not an address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if allow and allowed(str(address), allow):
        return None
    if any(address in net for net in METADATA):
        return "metadata"
    for why, hit in (("loopback", address.is_loopback), ("link_local", address.is_link_local),
                     ("unspecified", address.is_unspecified), ("multicast", address.is_multicast),
                     ("private", address.is_private), ("cgnat", address in CGNAT),
                     ("reserved", address.is_reserved or not address.is_global)):
        if hit:
            return why
    return None


def refused_literal(url: str, allow: tuple[Network, ...]) -> str | None:
    """A URL whose host is an IP literal (or `localhost`): why it is refused, else None. Pure."""
    host = (urlsplit(url).hostname or "").strip("[]")
    if host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        return None if allow and allowed("127.0.0.1", allow) else "loopback"
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # a name: checked when it is resolved
    return refused_address(host, allow)


class AddressRefused(OSError):
    def __init__(self, why: str) -> None:
        super().__init__(f"destination refused ({why})")  # never the address: it may be the person's
        self.why = why
