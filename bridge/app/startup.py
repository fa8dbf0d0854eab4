"""`sosbridge serve` start-up: checks that fail fast with one line, and the summary printed once running.

The checks turn the usual start-up failures (two listeners on one port or a port in use:
bridge/app/listeners.py; a secret or token too short; --embedded-broker with a broker URL set; store
unreachable; missing profile directory) into a ConfigError naming the setting, before anything starts.
The summary says where the bridge listens (each transport's lines come from its settings section:
bridge/app/sections.py), which store and routes it uses, which credentials are unset and which
SOSBRIDGE_* variables nothing reads (bridge/app/known_settings.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from bridge.app.config import ConfigError, Settings, env_name
from bridge.app.known_settings import unknown_variable_warnings
from bridge.app.listeners import check_listeners
from bridge.app.security_settings import DEFAULT_WEBHOOK_SECRET, MIN_SECRET_CHARS

if TYPE_CHECKING:
    from bridge.app.runtime import BridgeRuntime


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


# Credentials `serve` checks for length (a route's own secret is checked with the routes).


def check_credentials(settings: Settings) -> None:
    """ConfigError for a route secret shorter than MIN_SECRET_CHARS (a guessable one is no credential). The
    bridge's own secrets and tokens are checked when settings are built (security_settings.py); the default
    webhook secret is left to the security checks, which say what to do about it."""
    from bridge.delivery.routing import RoutingError, load_routes

    try:
        routes = load_routes(settings).all_routes()
    except RoutingError:
        return  # load_settings has already reported it
    for route in routes:
        if route.secret and route.secret != DEFAULT_WEBHOOK_SECRET and len(route.secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"route {route.name!r} secret", f"must be at least {MIN_SECRET_CHARS} characters")


def embedded_broker_key() -> str | None:
    """The settings key (`mqtt_url`) the installed embedded broker fills with its URL: the `setting` of the
    `sosbridge.embedded_broker` entry point's class; None when no transport offers one."""
    from bridge.infra.plugins import load_group

    return next((str(p.obj.setting) for p in load_group("sosbridge.embedded_broker") if hasattr(p.obj, "setting")),
                None)


def configured_broker(settings: Settings) -> str | None:
    """The broker URL the settings name (the key the embedded broker would fill), or None."""
    key = embedded_broker_key()
    return getattr(settings, key, None) if key else None


def check_embedded_broker(settings: Settings, embedded_broker: bool) -> None:
    if embedded_broker and configured_broker(settings):
        variable = env_name(embedded_broker_key() or "")
        raise ConfigError(
            "--embedded-broker",
            f"{variable} is set too: drop --embedded-broker to use that broker, "
            f"or unset {variable} to run the embedded one",
        )


def preflight(settings: Settings, embedded_broker: bool = False, broker_port: int = 1883) -> None:
    """Every check `serve` makes before starting; raises ConfigError."""
    check_profile_dirs(settings)
    check_embedded_broker(settings, embedded_broker)
    check_credentials(settings)
    asyncio.run(check_store(settings))
    check_listeners(settings, broker_port if embedded_broker else None)


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


async def transport_lines(runtime: BridgeRuntime) -> list[str]:
    """Each installed transport's own lines (its settings section's `summary`), labelled, in name order."""
    lines = []
    for section in runtime.settings.sections():
        if not section.label:
            continue
        name = section.adapter
        own = await section.summary(_adapter(runtime, name), _failed(runtime, name) if name else None)
        for i, line in enumerate(own):
            lines.append(f"{section.label if i == 0 else '':<10} {line}")
    return lines


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
    lines += await transport_lines(runtime)
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
    children = [(group, what) for group, what in ((runtime.delivery_processes, "delivery to the platform routes"),
                                                  (runtime.intake_processes, "intake, each sender in one"))
                if group is not None]
    if children:
        parts = [f"{what} ({group.count}, pid {', '.join(str(p) for p in group.pids if p is not None) or 'starting'})"
                 for group, what in children]
        count = 1 + sum(group.count for group, _ in children)
        lines.append(f"processes  {count}: this one; {'; '.join(parts)}")
    else:
        lines.append("processes  1")
    for warning in _credential_warnings(settings):
        lines.append(f"unset      {warning}")
    for warning in unknown_variable_warnings(os.environ):
        lines.append(f"unknown    {warning}")
    lines.append(f"logs       JSON lines on stderr, level {settings.log_level}")
    return lines
