"""The serial transport's settings (`SOSBRIDGE_SERIAL_*`), registered under `sosbridge.settings`: which
receivers run on which device nodes, and the summary's serial lines. See docs/transports/serial.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bridge.app.sections import PluginSettings


def port_states(spec: str) -> list[str]:
    """One line per configured port: whether its device node is there (a missing one is waited for)."""
    out = []
    for entry in spec.split(","):
        protocol, _, rest = entry.strip().partition("=")
        path = rest.split("?", 1)[0]
        if path:
            state = "present" if Path(path).exists() else "not present: waiting for it to appear"
            out.append(f"{protocol} {path}: {state}")
    return out


class SerialSettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="SOSBRIDGE_SERIAL_", extra="ignore")
    title = "Serial receivers"
    label = "serial"
    adapter = "serial"
    docs_page = "transports/serial.md"

    ports: str | None = Field(default=None, description="Serial receivers: protocol=path[,protocol=path...]")

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: str | None) -> str | None:
        for item in (value or "").split(","):
            if item.strip() and "=" not in item:
                raise ValueError(f"each entry is protocol=path, got {item.strip()!r}")
        return value or None

    async def summary(self, adapter: Any | None, failure: str | None) -> list[str]:
        if not self.ports:
            return ["off"]
        return [self.ports + (f": failed to start: {failure}" if failure else ""), *port_states(self.ports)]
