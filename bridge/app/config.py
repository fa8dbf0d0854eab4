"""Configuration: `SOSBRIDGE_*` environment variables and a TOML file (`--config FILE` or `SOSBRIDGE_CONFIG`).

One loader, `load_settings`, reads both. Precedence, highest first: explicit overrides (command-line
options), environment variables, the TOML file, then command defaults (e.g. `serve` turns CoAP on).
Every problem is a `ConfigError`: one line naming the setting (its environment variable) and what is
wrong. Each transport's settings are its own section (bridge/app/sections.py, registered under
`sosbridge.settings`): the file's and the keywords' `mqtt_url` go to that section, which is validated
here too. The reference is generated from this class and the sections (docs/reference/configuration.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from bridge.app.config_file import ConfigError, read_config_file
from bridge.app.sections import ENV_PREFIX, PluginSettings, key_prefix, registered, section_keys
from bridge.app.security_settings import SecuritySettings

S = TypeVar("S", bound=PluginSettings)
# Fields that hold credentials: their values never appear in an error message.
SECRET_FIELDS = frozenset({"admin_token", "platform_token", "platform_secret", "smtp_password", "ops_token",
                           "platform_tenant_tokens"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def default_data_dir() -> str:
    """`$XDG_DATA_HOME/sosbridge`, or `~/.local/share/sosbridge`: the same for every working directory."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "sosbridge")


def _http_url(value: str | None) -> str | None:
    if not value:
        return None  # an empty variable means unset
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return value


class Settings(SecuritySettings):  # security and HTTP-limit fields: bridge/security.py
    """The core's settings, plus the values of the plug-ins' sections (bridge/app/sections.py): a keyword
    that is no field here (`mqtt_url=...`) is kept for the section whose key it is, built by `section()`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")
    _section_values: dict[str, Any] = PrivateAttr(default_factory=dict)
    _sections: dict[type[PluginSettings], PluginSettings] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        own = type(self).model_fields
        plugin = {k: values.pop(k) for k in list(values) if not k.startswith("_") and k not in own}
        super().__init__(**values)
        self._section_values = plugin

    def section(self, cls: type[S]) -> S:
        """The plug-in section `cls`, built once from this object's values under its keys and the
        environment (keywords win, as for the core's fields). Raises pydantic's ValidationError."""
        built = self._sections.get(cls)
        if built is None:
            prefix = key_prefix(cls)
            values = {key[len(prefix):]: value for key, value in self._section_values.items()
                      if key.startswith(prefix) and key[len(prefix):] in cls.model_fields}
            built = self._sections[cls] = cls(**values)
        assert isinstance(built, cls)
        return built

    def sections(self) -> list[PluginSettings]:
        """Every installed plug-in's section (registered under sosbridge.settings), in name order."""
        return [self.section(cls) for _name, cls in registered()]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Settings:
        """A copy with `update` applied; a section's key (`mqtt_url`) updates that section."""
        own = type(self).model_fields
        update = dict(update or {})
        plugin = {k: update.pop(k) for k in list(update) if k not in own}
        copy = super().model_copy(update=update, deep=deep)
        copy._section_values = {**self._section_values, **plugin}
        copy._sections = {} if plugin else dict(self._sections)
        return copy

    if not TYPE_CHECKING:  # scripts and tests may read a section's field by its key: settings.mqtt_url

        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                found = None if name.startswith("_") else section_keys().get(name)
                if found is None:
                    raise
                cls, field = found
                return getattr(self.section(cls), field)

    config: str | None = Field(
        default=None, description="TOML configuration file (the same as `--config FILE`)", exclude=True
    )

    # storage
    data_dir: str = Field(
        default_factory=default_data_dir,
        description="Directory of the bridge's files: the SQLite store, the fallback spool, OSCORE contexts. "
        "Default `$XDG_DATA_HOME/sosbridge` (`~/.local/share/sosbridge`)",
    )
    db: str = Field(default="", description="SQLite file of the embedded store (default `<data_dir>/sosbridge.db`)")
    redis_url: str | None = Field(
        default=None, description="Use the Redis store instead of SQLite (scale-out): redis://, rediss://, unix://, or "
        "redis+sentinel://host:26379,host2:26379/service for a Sentinel-watched primary (docs/operations/redis.md)"
    )

    # HTTP API
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds to")
    http_port: int = Field(default=8080, ge=0, le=65535, description="Port of the HTTP API")
    public_url: str | None = Field(
        default=None, description="Base URL the platform calls back on (default `http://<http_host>:<http_port>`)"
    )
    admin_token: str | None = Field(default=None, description="Bearer credential for /v1/devices")
    platform_token: str | None = Field(
        default=None, description="Bearer credential the platform calls back with; the callbacks answer 403 while "
        "it is unset (never the webhook secret)"
    )
    max_body_bytes: int = Field(default=16 * 1024, gt=0, description="Largest request body accepted, in bytes")

    # contact platform
    platform_url: str | None = Field(default=None, description="Webhook URL of the contact platform (default route)")
    platform_secret: str = Field(default="change-me", min_length=1, description="HMAC key signing each webhook")
    platform_format: Literal["json", "cap", "eido"] = Field(
        default="json", description="Body format of the default route: json, cap or eido"
    )
    platform_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one webhook call, seconds")
    fallback_url: str | None = Field(default=None, description="Standby webhook for critical contacts")
    fallback_file: str | None = Field(
        default=None,
        description="JSONL spool used when no fallback URL answers (default `<data_dir>/fallback-contacts.jsonl`)",
    )
    fallback_after_attempts: int = Field(default=3, ge=1, description="Failed attempts before the fallback is used")
    # the person's own emergency contacts (docs/operations/emergency-contacts.md)
    smtp_host: str | None = Field(default=None, description="SMTP server for e-mails to emergency contacts")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP port (587 STARTTLS, 465 TLS, 25 plain)")
    smtp_security: Literal["starttls", "tls", "none"] = Field(default="starttls", description="starttls, tls or none")
    smtp_username: str | None = Field(default=None, description="SMTP login, if the server needs one")
    smtp_password: str | None = Field(default=None, repr=False, description="SMTP password")
    smtp_from: str = Field(default="sosbridge@localhost", description="From address of those e-mails")
    smtp_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one SMTP delivery, seconds")
    notify_max_age_s: float = Field(
        default=6 * 3600, gt=0, description="A notification not delivered by then is given up (never hours late)"
    )
    notify_map_url: str = Field(
        default="https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}",
        description="Map link in notifications; {lat} and {lon} are replaced",
    )
    retry_base_s: float = Field(default=0.5, gt=0, description="First retry delay; doubles on each attempt")
    retry_max_s: float = Field(default=60.0, gt=0, description="Longest retry delay")
    forwarder_workers: int = Field(
        default=128, ge=1, le=1024,
        description="Contacts in flight to the platform at once, each on a connection of its own while it is "
        "sent: lower it for a platform that cannot take that many connections, at the cost of delivery rate "
        "under a storm",
    )
    lease_s: float = Field(default=30.0, gt=0, description="How long a worker holds an outbox item before another may")
    workers: int = Field(
        default=0, ge=0, le=16,
        description="Processes `sosbridge serve` runs (the same as `--workers N`): with 2 or more, the platform "
        "routes' webhook and SIP contacts are sent from N-1 delivery processes it starts and restarts itself; "
        "1 keeps one process; 0 (the default): 2 when at least two CPUs are available to it, else 1",
    )
    intake_workers: int = Field(
        default=0, ge=0, le=16,
        description="Intake processes `sosbridge serve` runs beside itself: each identifies, decodes and stores "
        "the frames of the senders that hash to it, so intake uses more than one core (a sender keeps its "
        "order). Needs the Redis store (SOSBRIDGE_REDIS_URL); 0 (the default): intake runs in the main process",
    )
    intake_answer_timeout_s: float = Field(
        default=60.0, ge=1, le=3600,
        description="An intake process that has not answered a frame within this long is taken for hung: it "
        "is ended and started again, and its unanswered frames are retried; keep it above the longest store "
        "failover you expect",
    )

    # transports own their settings (device_adapters/<t>/settings.py, registered under sosbridge.settings)
    profile_dirs: str | None = Field(
        default=None, description="Extra profile directories (os.pathsep-separated); same ids override built-ins"
    )

    # abuse resistance and retention
    device_update_burst: int = Field(default=5, ge=1, description="Escalation contacts a device may cause at once")
    device_update_per_min: float = Field(default=6, gt=0, description="...and per minute after the burst")
    device_cache_s: float = Field(
        default=2.0, ge=0,
        description="Seconds the ingress reuses a registry answer for a sender (0: read the store for every "
        "frame). A device added, changed or removed by another process takes effect within this time; "
        "through the registry API at once",
    )
    auth_failures_burst: int = Field(default=20, ge=1, description="Failed credentials per source before 429")
    auth_failures_per_min: float = Field(default=20, gt=0, description="...and per minute after the burst")
    retention_days: float = Field(default=90, gt=0, description="Closed alerts older than this are purged")

    # device supervision (check-ins, gateways)
    supervision_enabled: bool = Field(default=True, description="Watch check-ins and gateways")
    supervision_grace_s: float = Field(default=60, ge=0, description="Tolerance for a late check-in")
    supervision_tick_s: float = Field(default=5, gt=0, description="Longest pause between supervision passes")
    supervision_registry_refresh_s: float = Field(
        default=60, gt=0, description="How often supervision re-reads the whole registry for newly supervised devices"
    )

    # behaviour
    default_status: Literal["actual", "exercise", "test"] = Field(
        default="actual", description="Status of every contact: actual, exercise or test"
    )
    last_known_max_age_s: float = Field(
        default=24 * 3600, ge=0, description="Oldest last-known fix used when an alert has none"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    disk_min_free_mb: float = Field(
        default=64, ge=0,
        description="Free space (MiB) below which the data directory's or the SQLite file's filesystem raises "
        "the disk_low alarm (readiness 503); 0 turns it off",
    )
    stop_timeout_s: float = Field(
        default=10.0, ge=1, le=300,
        description="Longest a stop (SIGTERM) takes: requests in flight get half of it, then the transports and "
        "the store close; past it the process exits with code 70 (docs/operations/stopping.md)",
    )

    @field_validator("platform_url", "fallback_url", "public_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.match(r"^(redis|rediss|unix|redis\+sentinel|rediss\+sentinel)://", value):
            raise ValueError("must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
        from bridge.store.redis_connection import UrlError, parse_target

        try:
            parse_target(value)
        except UrlError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}, got {value!r}")
        return value.upper()

    @field_validator("data_dir", "db")
    @classmethod
    def _home(cls, value: str) -> str:
        return os.path.expanduser(value) if value else value

    @model_validator(mode="after")
    def _default_db(self) -> Settings:
        if not self.db:
            self.db = str(Path(self.data_dir) / "sosbridge.db")
        return self

    @model_validator(mode="after")
    def _intake_needs_redis(self) -> Settings:
        if self.intake_workers and not self.redis_url:
            # SQLite keeps one writer in the main process (docs/architecture.md#intake-on-more-than-one-core).
            raise ValueError("SOSBRIDGE_INTAKE_WORKERS needs the Redis store (SOSBRIDGE_REDIS_URL): with SQLite, "
                             "intake runs in the main process")
        return self

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def effective_public_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"

    @property
    def effective_fallback_file(self) -> Path:
        return Path(self.fallback_file) if self.fallback_file else self.data_path / "fallback-contacts.jsonl"

    def store_description(self) -> str:
        """Which store this configuration uses, for start-up lines: `sqlite /abs/path` or `redis URL`."""
        if self.redis_url and "+sentinel://" in self.redis_url:
            from bridge.store.redis_connection import describe_url

            return describe_url(self.redis_url)
        if self.redis_url:
            from urllib.parse import urlsplit

            parts = urlsplit(self.redis_url)
            host = parts.hostname or parts.path
            port = f":{parts.port}" if parts.port else ""
            return f"redis {parts.scheme}://{host}{port}{parts.path if parts.hostname else ''}"
        return f"sqlite {Path(self.db).expanduser().resolve()}"


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """The one configuration loader: the file (`config_file` or SOSBRIDGE_CONFIG), the environment,
    `overrides` and `defaults`; also validates the file's `[[routes]]` and SOSBRIDGE_ROUTES.
    Raises ConfigError. `environ` (default os.environ) decides which file values the environment
    overrides and where SOSBRIDGE_CONFIG and routes come from; the settings' own variables are read from
    os.environ, so pass another mapping only where no SOSBRIDGE_* setting is set (tests)."""

    env = os.environ if environ is None else environ
    path = str(config_file) if config_file else env.get(env_name("config"))
    keys = section_keys()
    file_values = read_config_file(path, (set(Settings.model_fields) | set(keys)) - {"config"}) if path else {}
    env_keys = {k[len(ENV_PREFIX) :].lower() for k in env if k.startswith(ENV_PREFIX)}
    merged: dict[str, Any] = {k: v for k, v in (defaults or {}).items() if k not in env_keys and k not in file_values}
    merged.update({k: v for k, v in file_values.items() if k not in env_keys})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    if path:
        merged["config"] = path
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise _config_error(exc, file_values, path, env_name, SECRET_FIELDS, whole=env_name("config")) from None
    for _name, cls in registered():  # every section is validated now: a bad value is one line at start
        try:
            settings.section(cls)
        except ValidationError as exc:
            secret = {f for f, info in cls.model_fields.items() if info.repr is False}
            whole = cls.env_name("") + "*"  # a check of the section as a whole names its prefix
            raise _config_error(exc, file_values, path, cls.env_name, secret, whole, cls.key) from None
    _check_routes(settings, env)
    return settings


def _config_error(
    exc: ValidationError,
    file_values: Mapping[str, Any],
    path: str | None,
    variable: Callable[[str], str],
    secret: Collection[str],
    whole: str,
    key: Callable[[str], str] = str,
) -> ConfigError:
    """One ConfigError naming each bad setting by its variable (and its key in the file, if it came from
    there), or `whole` for a check of the settings as a whole; a secret's value is never shown."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else None
        where = f" ({key(field)} in {path})" if field is not None and key(field) in file_values else ""
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if field is not None and field not in secret and "got " not in msg and "input" in err:
            msg += f", got {err['input']!r}"
        problems.append(((variable(field) if field is not None else whole) + where, msg))
    first = ConfigError(*problems[0])
    if len(problems) > 1:
        rest = "; ".join(f"{setting}: {msg}" for setting, msg in problems[1:])
        return ConfigError(problems[0][0], f"{problems[0][1]}; {rest}")
    return first


def _check_routes(settings: Settings, env: Mapping[str, str]) -> None:
    """Fail at start-up, naming where the bad route is, never while routing a contact."""
    from bridge.delivery.routing import RoutingError, load_routes, routes_from_toml

    if settings.config:
        try:
            routes_from_toml(Path(settings.config).read_text(encoding="utf-8"), env)
        except RoutingError as exc:
            raise ConfigError(f"[[routes]] in {settings.config}", str(exc)) from None
    try:
        load_routes(settings, environ=env)
    except RoutingError as exc:
        raise ConfigError("SOSBRIDGE_ROUTES", str(exc).removeprefix("SOSBRIDGE_ROUTES ")) from None
