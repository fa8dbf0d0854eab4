"""The CoAP transport's settings (`SOSBRIDGE_COAP_*`), registered under `sosbridge.settings`: where the UDP
server listens, and its start-up summary line. See docs/transports/coap.md."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bridge.app.sections import Listener, PluginSettings


class CoapSettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="SOSBRIDGE_COAP_", extra="ignore")
    title = "CoAP"
    label = "CoAP"
    adapter = "coap"
    docs_page = "transports/coap.md"

    host: str = Field(default="127.0.0.1", description="Address the CoAP server binds to")
    port: int = Field(default=5683, ge=0, le=65535, description="UDP port of the CoAP server")
    enabled: bool = Field(
        default=False, description="Run the CoAP server (`sosbridge serve` turns it on unless set to false)"
    )

    def listeners(self) -> list[Listener]:
        return [Listener(self.env_name("port"), self.host, self.port, "udp")] if self.enabled else []

    async def summary(self, adapter: Any | None, failure: str | None) -> list[str]:
        if not self.enabled:
            return ["off"]
        return [f"coap://{self.host}:{self.port}" + (f": failed to start: {failure}" if failure else "")]
