"""Plug-in settings sections: each transport owns a settings class, registered under `sosbridge.settings`.

A section is a `PluginSettings` subclass with its own `env_prefix` (`SOSBRIDGE_MQTT_`); its fields are read
from the environment, and from the TOML file and `Settings(...)` keywords under the prefix-less key
(`mqtt_url` for `SOSBRIDGE_MQTT_URL`), so a transport's settings keep the names they had in the core.
`Settings.section(cls)` (bridge/app/config.py) builds and validates it once. A section also says which
sockets it listens on (`listeners`, checked for clashes before `serve` starts) and what the start-up
summary says of it (`summary`). The core loads sections through entry points and never imports them.
See docs/integrators/plugins.md#settings and docs/reference/configuration.md.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.infra.listeners import parse_networks
from bridge.infra.plugins import load_group

GROUP = "sosbridge.settings"
ENV_PREFIX = "SOSBRIDGE_"


@dataclass(frozen=True)
class Listener:
    """One socket a setting asks for, named by that setting (for the one-line clash error)."""

    setting: str
    host: str
    port: int
    protocol: str  # "tcp" or "udp"

    @property
    def kind(self) -> int:
        return socket.SOCK_STREAM if self.protocol == "tcp" else socket.SOCK_DGRAM

    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.protocol}"


class PluginSettings(BaseSettings):
    """Base of a plug-in's settings section. Subclasses set `model_config = SettingsConfigDict(env_prefix=
    "SOSBRIDGE_<NAME>_")`, a `title` (the reference page's heading and the summary's label) and may
    override `listeners` and `summary`."""

    model_config = SettingsConfigDict(extra="ignore")

    title: ClassVar[str] = ""
    # The summary's label (at most 10 characters); empty: the section has no summary line.
    label: ClassVar[str] = ""
    # The `sosbridge.adapters` name of the adapter these settings configure (its failure alarm, its instance).
    adapter: ClassVar[str] = ""
    # The page (relative to docs/) that explains the transport, linked from the reference.
    docs_page: ClassVar[str] = ""

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"{cls.model_config.get('env_prefix') or ''}{field}".upper()

    @classmethod
    def key(cls, field: str) -> str:
        """The field's key in the TOML file and in `Settings(...)`: the variable without SOSBRIDGE_."""
        return cls.env_name(field).removeprefix(ENV_PREFIX).lower()

    def listeners(self) -> list[Listener]:
        """The sockets these settings ask for (none unless the transport is on)."""
        return []

    async def summary(self, adapter: Any | None, failure: str | None) -> list[str]:
        """The start-up summary's lines for this transport: the first follows the label, the rest are
        indented under it. `adapter` is the running instance (None when it is off), `failure` the reason
        it failed to start. Awaited once `serve` runs (it may wait briefly, e.g. for a broker)."""
        return []


def unset_if_empty(value: object) -> object:
    """For a `mode="before"` validator: an empty variable (`SOSBRIDGE_WATCH_PORT=`) means unset."""
    return None if value == "" else value


def _networks_or_none(value: str | None) -> str | None:
    parse_networks(value)  # ValueError names the entry that is not a network
    return value or None


# Field types the transports' settings share: a port that an empty variable leaves off (give its bounds
# with Field(ge=0, le=65535)), and a comma-separated list of source networks (CIDRs) checked at start.
OptionalPort = Annotated[int | None, BeforeValidator(unset_if_empty)]
Networks = Annotated[str | None, AfterValidator(_networks_or_none)]


def key_prefix(cls: type[PluginSettings]) -> str:
    return cls.key("")


@cache
def registered() -> tuple[tuple[str, type[PluginSettings]], ...]:
    """The installed sections by entry-point name, in name order (loaded once per process)."""
    return tuple((plugin.name, plugin.obj) for plugin in load_group(GROUP)
                 if isinstance(plugin.obj, type) and issubclass(plugin.obj, PluginSettings))


def section_keys() -> dict[str, tuple[type[PluginSettings], str]]:
    """Every registered section's key → (class, field)."""
    return {cls.key(field): (cls, field) for _name, cls in registered() for field in cls.model_fields}
