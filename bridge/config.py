"""Configuration from `SOSBRIDGE_*` environment variables or a TOML file (`SOSBRIDGE_CONFIG`)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOSBRIDGE_", extra="ignore")

    # storage
    db: str = Field(default="var/sosbridge.db", description="SQLite file of the embedded store")
    redis_url: str | None = None
    data_dir: str = "var"

    # HTTP API
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_url: str | None = Field(default=None, description="Base URL the platform calls back on")
    admin_token: str | None = Field(default=None, description="Credential for /v1/devices")
    platform_token: str | None = Field(default=None, description="Credential the platform calls back with")
    max_body_bytes: int = 16 * 1024

    # contact platform
    platform_url: str | None = None
    platform_secret: str = "change-me"
    platform_format: Literal["json", "cap", "eido"] = "json"
    platform_timeout_s: float = 10.0
    fallback_url: str | None = None
    fallback_file: str | None = Field(default=None, description="JSONL spool used when no fallback URL")
    fallback_after_attempts: int = 3
    retry_base_s: float = 0.5
    retry_max_s: float = 60.0
    forwarder_workers: int = 4
    lease_s: float = 30.0

    # adapters
    mqtt_url: str | None = None
    mqtt_client_id: str = "sosbridge"
    mqtt_shared_group: str | None = None
    coap_host: str = "127.0.0.1"
    coap_port: int = 5683
    coap_enabled: bool = False
    serial_ports: str | None = Field(default=None, description="protocol=path[,protocol=path...]")
    profile_dirs: str | None = Field(default=None, description="Extra profile directories, os.pathsep-separated")
    # 4G SOS watches (TCP) and SIA DC-09 alarm panels/receivers (TCP and UDP): off unless a port is set
    watch_host: str = "127.0.0.1"
    watch_port: int | None = Field(default=None, description="TCP port for 4G SOS watches (3G protocol)")
    watch_idle_s: float = Field(default=900, description="Close a watch connection silent this long")
    dc09_host: str = "127.0.0.1"
    dc09_port: int | None = Field(default=None, description="TCP and UDP port of the SIA DC-09 receiver")

    # abuse resistance and retention
    device_update_burst: int = Field(default=5, description="Escalation contacts a device may cause at once")
    device_update_per_min: float = Field(default=6, description="...and per minute after the burst")
    auth_failures_burst: int = Field(default=20, description="Failed credentials per source before 429")
    auth_failures_per_min: float = 20
    retention_days: float = Field(default=90, description="Closed alerts older than this are purged")

    # device supervision (check-ins, gateways)
    supervision_enabled: bool = True
    supervision_grace_s: float = Field(default=60, description="Tolerance for a late check-in")
    supervision_tick_s: float = Field(default=5, description="Longest pause between supervision passes")
    supervision_registry_refresh_s: float = Field(
        default=60, description="How often supervision re-reads the whole registry for newly supervised devices"
    )

    # behaviour
    default_status: Literal["actual", "exercise", "test"] = "actual"
    last_known_max_age_s: float = 24 * 3600
    log_level: str = "INFO"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def effective_public_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"

    @property
    def effective_fallback_file(self) -> Path:
        return Path(self.fallback_file) if self.fallback_file else self.data_path / "fallback-contacts.jsonl"


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Environment variables win over the TOML file; explicit overrides win over both."""
    path = config_file or os.environ.get("SOSBRIDGE_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        file_values = dict(raw.get("sosbridge", raw))
    env_keys = {k[len("SOSBRIDGE_") :].lower() for k in os.environ if k.startswith("SOSBRIDGE_")}
    merged = {k: v for k, v in file_values.items() if k not in env_keys}
    merged.update(overrides)
    return Settings(**merged)
