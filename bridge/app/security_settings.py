"""The `SOSBRIDGE_*` settings of the security checks and the HTTP server limits (mixed into
`bridge.app.config.Settings`), and the constants the checks share. See docs/operations/security.md.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings

from bridge.infra.listeners import parse_networks

DEFAULT_WEBHOOK_SECRET = "change-me"
MIN_SECRET_CHARS = 16


def tenant_tokens(text: str | None) -> dict[str, str]:
    """`SOSBRIDGE_PLATFORM_TENANT_TOKENS`: `tenant=token,tenant=token` → {tenant: token}. ValueError names
    the bad entry (never the token). Pure."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        tenant, sep, token = item.strip().partition("=")
        if not sep or not tenant.strip() or not token.strip():
            raise ValueError(f"entry #{len(out) + 1} is not tenant=token")
        out[tenant.strip()] = token.strip()
    return out


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
    device_message_burst: int = Field(
        default=5, ge=1, description="The person's texts that go to the platform one contact each, at once"
    )
    device_message_per_min: float = Field(
        default=6, gt=0, description="...and per minute after the burst; texts beyond wait and go as one contact"
    )
    platform_tenant_tokens: str | None = Field(
        default=None, description="Per-tenant platform callback tokens, tenant=token,...: a tenant's own token "
        "is the only one that acts on its alerts; SOSBRIDGE_PLATFORM_TOKEN covers tenants without one",
    )
    # Event streams (GET /v1/alerts/{id}/events): never the capacity POST /v1/alerts and callbacks need
    sse_per_alert: int = Field(default=3, ge=1, description="Event streams one device may hold open on one alert")
    sse_max_streams: int = Field(
        default=100, ge=1, description="Event streams open in all; at most half of SOSBRIDGE_HTTP_LIMIT_CONCURRENCY"
    )
    sse_max_s: float = Field(
        default=900.0, gt=0, description="An event stream ends after this long (the app reconnects)"
    )
    notify_webhook_allow: str | None = Field(
        default=None, description="Networks (CIDRs) emergency-contact webhooks may reach although loopback, "
        "link-local, private or metadata addresses (refused otherwise)",
    )
    # TCP/UDP listeners (watch, DC-09): docs/operations/security.md
    listener_per_source: int = Field(
        default=16, ge=1, description="Connections one source address may hold on the watch and DC-09 TCP listeners"
    )
    listener_first_frame_s: float = Field(
        default=15.0, gt=0, description="Time a new watch or DC-09 TCP connection has to send its first whole frame"
    )
    # a transport's own allow-lists live in its settings section (device_adapters/<t>/settings.py)

    @field_validator("notify_webhook_allow")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        parse_networks(value)  # ValueError names the entry that is not a network
        return value or None

    @field_validator("platform_tenant_tokens")
    @classmethod
    def _tenant_tokens(cls, value: str | None) -> str | None:
        for tenant, token in tenant_tokens(value).items():
            if len(token) < MIN_SECRET_CHARS:
                raise ValueError(f"the token of tenant {tenant!r} is shorter than {MIN_SECRET_CHARS} characters")
        return value or None

    @field_validator("admin_token", "platform_token", "ops_token", "platform_secret", check_fields=False)
    @classmethod
    def _token_long_enough(cls, value: str | None) -> str | None:
        """The one length rule for the bridge's own secrets and tokens, wherever settings are built. Empty
        means unset; the default webhook secret is refused by `serve` with its own message (security.py)."""
        if value and value != DEFAULT_WEBHOOK_SECRET and len(value) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters, got {len(value)} "
                             '(a random one: python -c "import secrets; print(secrets.token_urlsafe(32))")')
        return value

    @model_validator(mode="after")
    def _streams_leave_room(self) -> SecuritySettings:
        if self.sse_max_streams * 2 > self.http_limit_concurrency:
            raise ValueError(
                f"SOSBRIDGE_SSE_MAX_STREAMS ({self.sse_max_streams}) must be at most half of "
                f"SOSBRIDGE_HTTP_LIMIT_CONCURRENCY ({self.http_limit_concurrency}): streams may not take the "
                "capacity alerts and platform callbacks need"
            )
        return self
