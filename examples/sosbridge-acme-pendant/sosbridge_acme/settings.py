"""The `acme-tcp` transport's own settings (`SOSBRIDGE_ACME_*`), registered under `sosbridge.settings`.

A plug-in's settings class is all the bridge needs to know of its configuration: `serve` reads it from
the environment and the TOML file (`acme_port = 7010`), refuses a bad value in one line naming the
variable, checks its port against every other listener before starting, prints its `summary` lines,
and the configuration reference lists it. The adapter reads it with `ctx.settings.section(AcmeSettings)`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bridge.app.sections import Listener, PluginSettings


class AcmeSettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="SOSBRIDGE_ACME_", extra="ignore")
    title = "ACME P1 pendants"
    label = "ACME"
    adapter = "acme-tcp"

    host: str = Field(default="127.0.0.1", description="Address the ACME pendant listener binds to")
    port: int | None = Field(default=None, ge=0, le=65535, description="TCP port for ACME pendants; enables them")

    def listeners(self) -> list[Listener]:
        return [] if self.port is None else [Listener(self.env_name("port"), self.host, self.port, "tcp")]

    async def summary(self, adapter: Any | None, failure: str | None) -> list[str]:
        if self.port is None:
            return ["off (set SOSBRIDGE_ACME_PORT)"]
        bound = getattr(adapter, "port", None) or self.port
        return [f"{self.host}:{bound} TCP" + (f": failed to start: {failure}" if failure else "")]
