"""Secure defaults of the running bridge: start-up refusals, HTTP server limits, slow-client guard.

Kept in one module so `serve` calls each piece with one line:

- `SecuritySettings`: the settings these checks read (mixed into `bridge.app.config.Settings`).
- `serve_refusal(settings)`: why `serve` must not start (a default webhook secret, an unsigned Alexa
  endpoint on real alerts), or None; `serve_warnings(settings)` for what may start but must be said.
- `http_server_options(settings)`: uvicorn keyword arguments (keep-alive, concurrency, proxy headers and
  the request-deadline protocol below).
- `RequestDeadlineProtocol`: uvicorn has no timeout on receiving a request (its keep-alive timer runs only
  *between* requests and every byte resets it), so a client that connects and sends nothing, or trickles
  its header, holds a socket forever. This protocol gives each request a deadline for its header and body,
  and caps connections that have not yet delivered a whole request: past the cap the oldest of them is
  closed, so half-open connections can never take the file descriptors a genuine SOS needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import h11
from pydantic import Field
from pydantic_settings import BaseSettings
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from bridge.app.config import Settings

log = logging.getLogger("sosbridge.security")

DEFAULT_WEBHOOK_SECRET = "change-me"
MIN_SECRET_CHARS = 16


class SecuritySettings(BaseSettings):
    """Fields of `Settings` (`SOSBRIDGE_*`) that the security checks and the HTTP server limits read."""

    ops_token: str | None = Field(
        default=None, description="Bearer credential for /readyz details (alarm details, transport errors)"
    )
    http_request_timeout_s: float = Field(
        default=10.0, gt=0, description="Time a client has to send a whole request (header and body)"
    )
    http_keepalive_s: int = Field(default=5, ge=1, description="Idle time between requests on one connection")
    http_max_pending: int = Field(
        default=256, ge=1, description="Connections still sending their request; past it the oldest is closed"
    )
    http_limit_concurrency: int = Field(
        default=1000, ge=1, description="Open connections and requests before uvicorn answers 503"
    )
    http_proxy_headers: bool = Field(
        default=False, description="Trust X-Forwarded-For/-Proto from SOSBRIDGE_HTTP_FORWARDED_ALLOW_IPS"
    )
    http_forwarded_allow_ips: str = Field(default="127.0.0.1", description="Proxies trusted when proxy headers are on")
    auth_audit_interval_s: float = Field(
        default=60.0, gt=0, description="One summary audit row per source and interval for refused credentials"
    )


# -- start-up checks -----------------------------------------------------------------------------------
def weak_secret(secret: str | None) -> bool:
    return not secret or secret.strip() == "" or secret == DEFAULT_WEBHOOK_SECRET


def serve_refusal(settings: Settings, embedded_broker: bool = False) -> str | None:
    """One line saying why `serve` must not start with these settings, or None."""
    if embedded_broker and not settings.mqtt_url and settings.default_status == "actual":
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
        if weak_secret(route.secret):
            return f"refusing to start: route {route.name!r} has a missing or default webhook secret"
    alexa = _alexa_settings()
    if alexa is not None and alexa.is_enabled and not alexa.verify_signature:
        if settings.default_status == "actual":
            return (
                "refusing to start: SOSBRIDGE_ALEXA_VERIFY_SIGNATURE=false accepts forged Alexa requests; "
                "it is allowed only with SOSBRIDGE_DEFAULT_STATUS=exercise or test"
            )
    return None


def serve_warnings(settings: Settings, embedded_broker: bool = False) -> list[str]:
    """What `serve` logs as errors or warnings at start (it still starts)."""
    out: list[str] = []
    if not settings.platform_token and settings.platform_url:
        out.append("SOSBRIDGE_PLATFORM_TOKEN is not set: platform callbacks (ack/resolve) answer 403")
    alexa = _alexa_settings()
    if alexa is not None and alexa.is_enabled and not alexa.verify_signature:
        out.append("Alexa request signatures are NOT verified (SOSBRIDGE_ALEXA_VERIFY_SIGNATURE=false): lab use only")
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
        log.error(warning) if "NOT verified" in warning else log.warning(warning)


def _alexa_settings() -> Any:
    try:
        from skills.alexa.config import AlexaSettings
    except ImportError:
        return None
    return AlexaSettings()


# -- HTTP server -------------------------------------------------------------------------------------
class _PendingConnections:
    """Connections of one server that have not delivered a whole request yet, oldest first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[int, RequestDeadlineProtocol] = OrderedDict()
        self.evicted = 0
        self.timed_out = 0

    def add(self, conn: RequestDeadlineProtocol) -> None:
        self.items[id(conn)] = conn
        self.items.move_to_end(id(conn))
        while len(self.items) > self.limit:
            _, oldest = self.items.popitem(last=False)
            self.evicted += 1
            oldest.drop("too many pending connections")

    def discard(self, conn: RequestDeadlineProtocol) -> None:
        self.items.pop(id(conn), None)


class RequestDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request and a cap on pending connections.

    The deadline starts when the connection opens (or, on a kept-alive connection, at the first byte of
    the next request) and ends when the request's body has been received in full; a response may then
    take as long as it needs. Configure with `configured(timeout_s, max_pending)`.
    """

    request_timeout_s: float = 10.0
    pending: _PendingConnections = _PendingConnections(256)

    @classmethod
    def configured(cls, timeout_s: float, max_pending: int) -> type[RequestDeadlineProtocol]:
        return type(
            "RequestDeadlineProtocol",
            (cls,),
            {"request_timeout_s": timeout_s, "pending": _PendingConnections(max_pending)},
        )

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of a further request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._disarm()  # received in full (DONE), or the connection is ending anyway

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._expired)
        self.pending.add(self)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.pending.discard(self)

    def _expired(self) -> None:
        self._deadline = None
        self.pending.timed_out += 1
        self.drop("request not received in time")

    def drop(self, why: str) -> None:
        """Close a connection whose request is incomplete. No answer: the client never finished asking."""
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            log.debug("closing slow connection", extra={"why": why, "client": str(self.client)})
            self.transport.close()


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit (as Go's runtime does); returns the soft limit."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 1 << 16
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def http_server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config keyword arguments for the bridge's HTTP API (serve, embedded bridge).

    Sized against the process's descriptor limit so that accepting never fails for want of one: pending
    (unfinished) connections get at most a quarter of it, and asyncio accepts at most `backlog` sockets per
    loop pass (uvicorn's 2048 would accept far past a 1024 limit before any protocol could close one).
    """
    fds = raise_fd_limit()
    quarter = max(8, fds // 4)
    pending = min(settings.http_max_pending, quarter)
    protocol = RequestDeadlineProtocol.configured(settings.http_request_timeout_s, pending)
    return {
        "host": settings.http_host,
        "port": settings.http_port,
        "http": protocol,
        "backlog": min(2048, quarter),
        "timeout_keep_alive": settings.http_keepalive_s,
        "limit_concurrency": min(settings.http_limit_concurrency, max(16, fds // 2)),
        "proxy_headers": settings.http_proxy_headers,
        "forwarded_allow_ips": settings.http_forwarded_allow_ips,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
    }


# -- refused credentials: bounded audit ----------------------------------------------------------------
class RefusalAudit:
    """Refused credentials, audited as one summary row per source and interval.

    The first refusal of a source in an interval is written at once (an operator sees an attack begin);
    the rest are counted and written as one row when the interval ends (`flush`, from the health loop, or
    the source's next refusal after it). At most `max_rows` rows per interval in all: sources beyond that
    are summed into one `source:*` row, so a crowd of addresses cannot turn refusals into disk writes
    either. Memory is bounded by `max_sources`.
    """

    def __init__(self, interval_s: float = 60.0, max_rows: int = 100, max_sources: int = 10_000) -> None:
        self.interval_s = interval_s
        self.max_rows = max_rows
        self.max_sources = max_sources
        # source -> [interval start, refusals not yet written, last reason]
        self._open: OrderedDict[str, list[Any]] = OrderedDict()
        self._overflow = 0
        self._rows_start = 0.0
        self._rows = 0

    def _row_allowed(self, now: float) -> bool:
        if now - self._rows_start >= self.interval_s:
            self._rows_start, self._rows = now, 0
        if self._rows >= self.max_rows:
            return False
        self._rows += 1
        return True

    def record(self, source: str, reason: str, now: float) -> list[tuple[str, str]]:
        """Count one refusal; returns the rows (actor, detail) to write now."""
        rows: list[tuple[str, str]] = []
        entry = self._open.get(source)
        if entry is not None and now - entry[0] >= self.interval_s:
            rows += self._close(source, entry, now)
            entry = None
        if entry is None:
            self._open[source] = [now, 0, reason]
            if len(self._open) > self.max_sources:
                _old, old_entry = self._open.popitem(last=False)
                self._overflow += old_entry[1]
            if self._row_allowed(now):
                rows.append((f"source:{source}", reason))
            else:
                self._overflow += 1
        else:
            entry[1] += 1
            entry[2] = reason
        return rows

    def _close(self, source: str, entry: list[Any], now: float) -> list[tuple[str, str]]:
        self._open.pop(source, None)
        if entry[1] == 0:
            return []
        if not self._row_allowed(now):
            self._overflow += entry[1]
            return []
        return [(f"source:{source}", f"{entry[2]}; {entry[1]} more refused in {self.interval_s:.0f} s")]

    def flush(self, now: float) -> list[tuple[str, str]]:
        """Rows for every interval that has ended (oldest first), and the overflow row."""
        rows: list[tuple[str, str]] = []
        while self._open:
            source, entry = next(iter(self._open.items()))
            if now - entry[0] < self.interval_s:
                break
            rows += self._close(source, entry, now)
        if self._overflow:
            rows.append(("source:*", f"{self._overflow} refusals from sources past the audit row limit"))
            self._overflow = 0
        return rows


async def audit_refusal(runtime: Any, source: str, reason: str, now: float) -> None:
    """Audit one refused device credential (summarised; see RefusalAudit)."""
    from bridge.core.model import utcnow

    for actor, detail in runtime.refusals.record(source, reason, now):
        await runtime.store.audit(utcnow(), actor, "credential_refused", "device_token", detail)


async def flush_refusals(runtime: Any, now: float) -> None:
    from bridge.core.model import utcnow

    for actor, detail in runtime.refusals.flush(now):
        await runtime.store.audit(utcnow(), actor, "credential_refused", "device_token", detail)


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
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and control_token is None:
        log.warning(
            "the receiver binds beyond loopback without --control-token: GET /contacts (personal data) and "
            "/control/* are open to anyone who can reach it",
            extra={"host": host},
        )
    return secret
