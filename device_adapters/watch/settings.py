"""The 4G SOS watch transport's settings (`SOSBRIDGE_WATCH_*`), registered under `sosbridge.settings`: the
TCP listener (off unless a port is set), its allow-list and session rules, and its summary line.
See docs/transports/watch.md."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bridge.app.sections import Listener, Networks, OptionalPort, PluginSettings


class WatchSettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="SOSBRIDGE_WATCH_", extra="ignore")
    title = "4G SOS watches"
    label = "watch"
    adapter = "watch"
    docs_page = "transports/watch.md"

    host: str = Field(default="127.0.0.1", description="Address the 4G SOS watch listener binds to")
    port: OptionalPort = Field(
        default=None, ge=0, le=65535, description="TCP port for 4G SOS watches (3G protocol); enables it"
    )
    idle_s: float = Field(default=900, gt=0, description="Close a watch connection silent this long")
    allow: Networks = Field(
        default=None, description="Source networks (CIDRs, comma-separated: the private APN) watches may connect from"
    )
    keepalive_s: float = Field(
        default=600.0, gt=0, description="A watch session heard within this long holds its ID; a second "
        "connection naming it is quarantined until the first has been silent this long (the watch's LK interval)",
    )

    def listeners(self) -> list[Listener]:
        return [] if self.port is None else [Listener(self.env_name("port"), self.host, self.port, "tcp")]

    async def summary(self, adapter: Any | None, failure: str | None) -> list[str]:
        if self.port is None:
            return ["off"]
        bound = getattr(adapter, "port", None) or self.port
        return [f"{self.host}:{bound} TCP" + (f": failed to start: {failure}" if failure else ""),
                *getattr(adapter, "summary_notes", ())]
