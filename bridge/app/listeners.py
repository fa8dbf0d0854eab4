"""The sockets `sosbridge serve` will listen on, checked before anything starts.

`listeners(settings, embedded_broker_port)` names each configured listener by its setting (a transport's
own come from its settings section, bridge/app/sections.py). `check_listeners`
raises one ConfigError for the first problem: two settings asking for the same port and protocol on
overlapping addresses (the message names both), or a port another process holds or this host cannot
bind (naming the setting). Port 0 (the system picks one) never clashes. See docs/operations/configuration.md.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from bridge.app.config import ConfigError, Settings
from bridge.app.sections import Listener

WILDCARDS = ("", "0.0.0.0", "::", "*")


def check_port_free(setting: str, host: str, port: int, kind: int = socket.SOCK_STREAM) -> None:
    """ConfigError when (host, port) cannot be bound: in use, not an address here, or not allowed."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=kind)
    except socket.gaierror as exc:
        raise ConfigError(setting, f"cannot resolve {host!r}: {exc.strerror}") from None
    family, socktype, proto, _name, addr = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(setting, f"{host}:{port} is already in use") from None
            raise ConfigError(setting, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def listeners(settings: Settings, embedded_broker_port: int | None = None) -> list[Listener]:
    """The HTTP API's socket, each installed transport's (its section's `listeners()`) and the broker's."""
    out = [Listener("SOSBRIDGE_HTTP_PORT", settings.http_host, settings.http_port, "tcp")]
    for section in settings.sections():
        out += section.listeners()
    if embedded_broker_port is not None:
        out.append(Listener("--broker-port", "127.0.0.1", embedded_broker_port, "tcp"))
    return out


def _address(host: str) -> str:
    if host in WILDCARDS:
        return "*"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        try:
            return str(socket.getaddrinfo(host, None)[0][4][0])
        except socket.gaierror:
            return host


def overlap(a: Listener, b: Listener) -> bool:
    if a.port == 0 or a.port != b.port or a.protocol != b.protocol:
        return False
    x, y = _address(a.host), _address(b.host)
    return x == y or "*" in (x, y)


def clash(items: list[Listener]) -> tuple[Listener, Listener] | None:
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            if a.setting != b.setting and overlap(a, b):
                return a, b
    return None


def check_listeners(settings: Settings, embedded_broker_port: int | None = None) -> None:
    """ConfigError (one line) on a clash between two settings or a port this process cannot bind."""
    items = listeners(settings, embedded_broker_port)
    pair = clash(items)
    if pair is not None:
        a, b = pair
        raise ConfigError(
            f"{b.setting} and {a.setting}",
            f"both ask for port {b.port}/{b.protocol} ({b.host} and {a.host}); give one of them another port",
        )
    for item in items:
        check_port_free(item.setting, item.host, item.port, item.kind)
