"""Where a SIP route's MESSAGE goes: the Request-URI and the next hop (host, port, transport).

Pure. `sip:`/`sips:` URIs are their own next hop unless an outbound proxy is set; a service URN
(`urn:service:sos`) is the Request-URI for location-based routing and needs an outbound proxy (the ESRP
that resolves it with LoST; the bridge has no LoST client). `transport` defaults to TCP for `sip:` and TLS
for `sips:`; UDP is used only when asked for and only for small bodies (see transport.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Transport = Literal["udp", "tcp", "tls"]
_SIP = re.compile(
    r"^(?P<scheme>sips?):(?:(?P<user>[^@;?\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>\d{1,5}))?(?P<params>(?:;[^;?\s]*)*)$"
)
_URN = re.compile(r"^urn:service:[A-Za-z0-9.-]+$", re.IGNORECASE)


class SipUriError(ValueError):
    """Not a SIP URI or service URN the bridge can send to."""


@dataclass(frozen=True)
class Hop:
    host: str
    port: int
    transport: Transport

    @property
    def tls(self) -> bool:
        return self.transport == "tls"


def is_sip_target(url: str) -> bool:
    low = url.lower()
    return low.startswith(("sip:", "sips:")) or bool(_URN.match(url))


def parse_hop(uri: str) -> Hop:
    """The next hop a `sip:`/`sips:` URI names (RFC 3263 without DNS NAPTR/SRV: host and port as given)."""
    m = _SIP.match(uri.strip())
    if m is None:
        raise SipUriError(f"not a SIP URI: {uri!r}")
    params = {}
    for raw in m["params"].split(";")[1:]:
        key, _, value = raw.partition("=")
        params[key.lower()] = value.lower()
    secure = m["scheme"].lower() == "sips"
    transport = params.get("transport", "tls" if secure else "tcp")
    if transport not in ("udp", "tcp", "tls"):
        raise SipUriError(f"transport={transport} is not supported (udp, tcp or tls)")
    if secure and transport != "tls":
        raise SipUriError("a sips: URI is sent over TLS only")
    default_port = 5061 if transport == "tls" else 5060
    port = int(m["port"]) if m["port"] else default_port
    if not 0 < port < 65536:
        raise SipUriError(f"port {port} is out of range")
    return Hop(host=m["host"].strip("[]"), port=port, transport=transport)  # type: ignore[arg-type]


def next_hop(target: str, outbound_proxy: str | None) -> Hop:
    """The proxy when one is set, else the target itself; a service URN needs a proxy."""
    if outbound_proxy:
        return parse_hop(outbound_proxy)
    if _URN.match(target):
        raise SipUriError("a urn:service: target needs an outbound proxy (sip_outbound_proxy)")
    return parse_hop(target)


def check_target(target: str) -> None:
    """Raise SipUriError unless `target` is a SIP URI or a service URN."""
    if _URN.match(target):
        return
    parse_hop(target)
