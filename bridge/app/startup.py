"""`sosbridge serve` start-up: checks that fail fast with one line, and the summary printed once running.

The checks turn the usual start-up failures (port in use, store unreachable, missing profile directory)
into a ConfigError naming the setting, before anything starts. The summary says where the bridge
listens, which store and routes it uses and which credentials are unset.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from bridge.app.config import ConfigError, Settings
from bridge.infra.aio import wait_event

if TYPE_CHECKING:
    from bridge.app.runtime import BridgeRuntime


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


async def check_store(settings: Settings) -> None:
    """Open and ping the store once, so an unreachable Redis or unwritable database is one line."""
    from bridge.store import make_store

    setting = "SOSBRIDGE_REDIS_URL" if settings.redis_url else "SOSBRIDGE_DB"
    try:
        store = make_store(settings)
        await store.open()
        try:
            ok = await store.ping()
        finally:
            await store.close()
    except Exception as exc:
        raise ConfigError(setting, f"cannot open the store ({settings.store_description()}): {exc}") from None
    if not ok:
        raise ConfigError(setting, f"the store does not answer ({settings.store_description()})")


def check_profile_dirs(settings: Settings) -> None:
    from bridge.devices.profiles import ProfileError, ProfileRegistry

    dirs = [d for d in (settings.profile_dirs or "").split(os.pathsep) if d]
    for directory in dirs:
        if not Path(directory).is_dir():
            raise ConfigError("SOSBRIDGE_PROFILE_DIRS", f"no such directory {directory!r}")
    try:  # a profile file that does not load is refused, not skipped: its devices would go unheard
        ProfileRegistry.load(dirs, strict=True)
    except ProfileError as exc:
        raise ConfigError("SOSBRIDGE_PROFILE_DIRS", exc.one_line()) from None


def preflight(settings: Settings) -> None:
    """Every check `serve` makes before starting; raises ConfigError."""
    check_profile_dirs(settings)
    check_port_free("SOSBRIDGE_HTTP_PORT", settings.http_host, settings.http_port)
    asyncio.run(check_store(settings))


# -- summary ---------------------------------------------------------------------------------------------
def redact_url(url: str) -> str:
    """The URL without its password (user names stay: they help to diagnose an ACL)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _adapter(runtime: BridgeRuntime, name: str) -> Any:
    return next((a for a in runtime.adapters if getattr(a, "name", None) == name), None)


def _failed(runtime: BridgeRuntime, name: str) -> str | None:
    alarm = runtime.forwarder.alarms.get(f"adapter_{name}_failed")
    return alarm.detail if alarm is not None else None


async def mqtt_state(runtime: BridgeRuntime, wait_s: float = 3.0) -> str:
    """'connected', 'not connected (...)' or 'off'; waits a little for the first connection."""
    settings = runtime.settings
    if not settings.mqtt_url:
        return "off (set SOSBRIDGE_MQTT_URL)"
    url = redact_url(settings.mqtt_url)
    failure = _failed(runtime, "mqtt")
    if failure:
        return f"{url}: failed to start: {failure}"
    adapter = _adapter(runtime, "mqtt")
    subscribed = getattr(getattr(adapter, "conn", None), "subscribed", None)
    if subscribed is None or not hasattr(subscribed, "wait"):
        return f"{url} (connection state unknown)"
    if await wait_event(subscribed, wait_s):
        return f"{url}: connected"
    return f"{url}: NOT connected yet (retrying in the background; presses over MQTT wait at the broker)"


def serial_port_states(spec: str) -> list[str]:
    """One line per configured port: whether its device node is there (a missing one is waited for)."""
    out = []
    for entry in spec.split(","):
        protocol, _, rest = entry.strip().partition("=")
        path = rest.split("?", 1)[0]
        if path:
            state = "present" if Path(path).exists() else "not present: waiting for it to appear"
            out.append(f"{protocol} {path}: {state}")
    return out


def _credential_warnings(settings: Settings) -> list[str]:
    unset = []
    if not settings.admin_token:
        unset.append("SOSBRIDGE_ADMIN_TOKEN (the /v1/devices API is disabled)")
    if settings.platform_secret == "change-me":
        unset.append("SOSBRIDGE_PLATFORM_SECRET (webhooks are signed with the default 'change-me')")
    if not settings.platform_token:
        unset.append("SOSBRIDGE_PLATFORM_TOKEN (the platform's callbacks are refused: ack, resolve, messages)")
    return unset


async def summary_lines(runtime: BridgeRuntime) -> list[str]:
    settings = runtime.settings
    base = f"http://{settings.http_host}:{settings.http_port}"
    lines = [f"HTTP       {base}  (API docs {base}/docs, health {base}/readyz, metrics {base}/metrics)"]
    if settings.coap_enabled:
        failure = _failed(runtime, "coap")
        where = f"coap://{settings.coap_host}:{settings.coap_port}"
        lines.append(f"CoAP       {where}" + (f": failed to start: {failure}" if failure else ""))
    else:
        lines.append("CoAP       off")
    lines.append(f"MQTT       {await mqtt_state(runtime)}")
    if settings.serial_ports:
        failure = _failed(runtime, "serial")
        lines.append(f"serial     {settings.serial_ports}" + (f": failed to start: {failure}" if failure else ""))
        lines += [f"           {line}" for line in serial_port_states(settings.serial_ports)]
    else:
        lines.append("serial     off")
    for name, label, host, port, over in (("watch", "watch     ", settings.watch_host, settings.watch_port, "TCP"),
                                          ("dc09", "DC-09     ", settings.dc09_host, settings.dc09_port, "TCP+UDP")):
        if port is None:
            lines.append(f"{label} off")
            continue
        failure = _failed(runtime, name)
        bound = getattr(_adapter(runtime, name), "port", None) or port
        lines.append(f"{label} {host}:{bound} {over}" + (f": failed to start: {failure}" if failure else ""))
        lines += [f"           {note}" for note in getattr(_adapter(runtime, name), "summary_notes", ())]
    lines.append(f"store      {settings.store_description()}")
    lines.append(f"data dir   {settings.data_path.expanduser().absolute()}")
    routes = runtime.routes.all_routes()
    if routes:
        for route in routes:
            lines.append(f"route      {route.name}: {redact_url(route.url)} ({route.format})")
    else:
        spool = runtime.settings.effective_fallback_file
        lines.append(
            "route      NONE: set SOSBRIDGE_PLATFORM_URL or [[routes]]; contacts wait in the outbox "
            f"(critical ones also go to the spool {spool})"
        )
    lines.append(f"profiles   {len(runtime.profiles.profiles)} device profiles")
    for warning in _credential_warnings(settings):
        lines.append(f"unset      {warning}")
    lines.append(f"logs       JSON lines on stderr, level {settings.log_level}")
    return lines
