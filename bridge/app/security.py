"""Secure defaults of the running bridge, checked before `serve` and `receiver` start.

- `serve_refusal(settings)`: why `serve` must not start (a default webhook secret, an anonymous broker on
  real alerts, a plug-in's own refusal such as an unsigned Alexa endpoint), or None;
  `serve_warnings(settings)` for what may start but must be said.
- Plug-ins add their own checks through the `sosbridge.checks` entry point group: a callable taking the
  settings and returning a `StartupCheck` (a refusal or None, and warnings). The core never imports them.

The HTTP server's limits are in bridge/app/http_server.py; the audit of refused credentials in
bridge/app/refusal_audit.py. See docs/operations/security.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bridge.app.security_settings import DEFAULT_WEBHOOK_SECRET, MIN_SECRET_CHARS
from bridge.app.startup import configured_broker
from bridge.infra.plugins import load_group

if TYPE_CHECKING:
    from bridge.app.config import Settings

log = logging.getLogger("sosbridge.security")


@dataclass(frozen=True)
class StartupCheck:
    """What one plug-in says of the settings: why `serve` must not start (or None), and what to warn of.
    A warning containing the word NOT (in capitals) is logged as an error."""

    refusal: str | None = None
    warnings: list[str] = field(default_factory=list)


def plugin_checks() -> list[Callable[[Settings], StartupCheck]]:
    """The start-up checks of installed plug-ins (`sosbridge.checks` entry points)."""
    return [plugin.obj for plugin in load_group("sosbridge.checks")]


# -- start-up checks -----------------------------------------------------------------------------------
def weak_secret(secret: str | None) -> bool:
    return not secret or secret.strip() == "" or secret == DEFAULT_WEBHOOK_SECRET


def serve_refusal(settings: Settings, embedded_broker: bool = False) -> str | None:
    """One line saying why `serve` must not start with these settings, or None."""
    if embedded_broker and not configured_broker(settings) and settings.default_status == "actual":
        return (
            "refusing to start: --embedded-broker is anonymous (any local process can publish as any device); "
            "it runs only with SOSBRIDGE_DEFAULT_STATUS=exercise or test; use Mosquitto with passwords and the ACL"
        )
    if settings.platform_url and weak_secret(settings.platform_secret):
        return (
            "refusing to start: SOSBRIDGE_PLATFORM_URL is set but SOSBRIDGE_PLATFORM_SECRET is missing or the "
            "default 'change-me'; set a random secret shared with the platform "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    if settings.platform_token and settings.platform_token == settings.platform_secret:
        return (
            "refusing to start: SOSBRIDGE_PLATFORM_TOKEN equals the webhook secret; the HMAC key must not travel "
            "as a bearer token, give the callbacks their own token"
        )
    from bridge.delivery.routing import RoutingError, load_routes

    try:
        routes = load_routes(settings)
    except RoutingError:
        return None  # the runtime reports routing errors itself
    for route in routes.all_routes():
        if route.needs_secret and weak_secret(route.secret):
            return f"refusing to start: route {route.name!r} has a missing or default webhook secret"
    for check in plugin_checks():
        refusal = check(settings).refusal
        if refusal is not None:
            return refusal
    return None


def serve_warnings(settings: Settings, embedded_broker: bool = False) -> list[str]:
    """What `serve` logs as errors or warnings at start (it still starts)."""
    out: list[str] = []
    if not settings.platform_token and settings.platform_url:
        out.append("SOSBRIDGE_PLATFORM_TOKEN is not set: platform callbacks (ack/resolve) answer 403")
    for check in plugin_checks():
        out.extend(check(settings).warnings)
    if embedded_broker:
        out.append(
            "the embedded MQTT broker is anonymous: any local process can publish as any device; "
            "use Mosquitto with passwords and the ACL outside a demo"
        )
    if settings.http_proxy_headers:
        out.append(f"trusting X-Forwarded-For from {settings.http_forwarded_allow_ips}")
    return out


def check_serve(settings: Settings, embedded_broker: bool = False) -> None:
    """What `serve` calls before it starts: exit 2 with one clear line on a refusal, log the warnings."""
    import sys

    refusal = serve_refusal(settings, embedded_broker)
    if refusal is not None:
        sys.stderr.write(refusal + "\n")
        raise SystemExit(2)
    for warning in serve_warnings(settings, embedded_broker):
        log.error(warning) if "NOT" in warning else log.warning(warning)


def check_receiver(secret: str | None, host: str, control_token: str | None) -> str:
    """`sosbridge receiver`: exit 2 without a real webhook secret; warn when its personal data and
    control routes are open beyond loopback. Returns the secret."""
    import ipaddress
    import sys

    if secret is None or weak_secret(secret):
        sys.stderr.write(
            "refusing to start: give the receiver the webhook secret (--secret or SOSBRIDGE_PLATFORM_SECRET)\n"
        )
        raise SystemExit(2)
    if len(secret) < MIN_SECRET_CHARS:
        sys.stderr.write(f"refusing to start: the receiver's webhook secret must be at least {MIN_SECRET_CHARS} "
                         "characters (--secret or SOSBRIDGE_PLATFORM_SECRET)\n")
        raise SystemExit(2)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and control_token is None:
        sys.stderr.write(
            "refusing to start: --control-token is required when the receiver binds beyond loopback "
            f"({host}): GET /contacts (personal data) and /control/* would be open to anyone who can reach it\n"
        )
        raise SystemExit(2)
    return secret


_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def control_request_refusal(host_header: str | None, origin: str | None, token_set: bool) -> str | None:
    """Why a request to the reference receiver's control routes is refused (None: it may go on). Pure.

    - An `Origin` that is not the receiver's own (scheme://Host) is a web page's cross-site request (CSRF:
      any page the operator visits could set the platform "down"): refused, token or not.
    - Without a control token the receiver is on loopback only, so the `Host` must name loopback: a
      DNS-rebound name pointing at 127.0.0.1 is refused.
    """
    from urllib.parse import urlsplit

    host = (host_header or "").strip().lower()
    if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host):
        return "cross-origin request to a control route"
    if not token_set:
        name = urlsplit(f"//{host}").hostname or ""
        if name not in _LOOPBACK_NAMES and not name.startswith("127."):
            return "the Host header does not name this receiver on loopback"
    return None
