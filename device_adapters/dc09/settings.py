"""The SIA DC-09 receiver's settings (`SOSBRIDGE_DC09_*`), registered under `sosbridge.settings`: its TCP
and UDP port (off unless set), which networks may send plain (unencrypted) accounts, and its summary
line. See docs/transports/dc09.md."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bridge.app.sections import Listener, Networks, OptionalPort, PluginSettings


class Dc09Settings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="SOSBRIDGE_DC09_", extra="ignore")
    title = "SIA DC-09 receiver"
    label = "DC-09"
    adapter = "dc09"
    docs_page = "transports/dc09.md"

    host: str = Field(default="127.0.0.1", description="Address the SIA DC-09 receiver binds to")
    port: OptionalPort = Field(
        default=None, ge=0, le=65535, description="TCP and UDP port of the SIA DC-09 receiver; enables it"
    )
    plain_allow: Networks = Field(
        default=None, description="Source networks (CIDRs) plain DC-09 accounts (no AES key) are accepted from",
    )

    def listeners(self) -> list[Listener]:
        if self.port is None:
            return []
        return [Listener(self.env_name("port"), self.host, self.port, protocol) for protocol in ("tcp", "udp")]

    async def summary(self, adapter: Any | None, failure: str | None) -> list[str]:
        if self.port is None:
            return ["off"]
        bound = getattr(adapter, "port", None) or self.port
        return [f"{self.host}:{bound} TCP+UDP" + (f": failed to start: {failure}" if failure else ""),
                *getattr(adapter, "summary_notes", ())]
