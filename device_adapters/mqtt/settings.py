"""The MQTT transport's settings (`SOSBRIDGE_MQTT_*`), registered under `sosbridge.settings`: the broker the
bridge subscribes to, and the start-up summary's MQTT line. See docs/transports/mqtt.md."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bridge.app.sections import PluginSettings
from bridge.app.startup import redact_url
from bridge.infra.aio import wait_event

CONNECT_WAIT_S = 3.0  # how long the summary waits for the first connection


class MqttSettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="SOSBRIDGE_MQTT_", extra="ignore")
    title = "MQTT"
    label = "MQTT"
    adapter = "mqtt"
    docs_page = "transports/mqtt.md"

    url: str | None = Field(default=None, description="MQTT broker URL (mqtt:// or mqtts://); enables MQTT")
    client_id: str = Field(default="sosbridge", description="MQTT client id (each instance needs its own)")
    shared_group: str | None = Field(
        default=None, description="MQTT shared-subscription group, so several bridges share one stream"
    )
    keepalive: int = Field(
        default=30, ge=2, le=3600,
        description="MQTT keepalive, s: a dead or black-holed broker link is seen in about 2x this",
    )
    sender_workers: int = Field(
        default=256, ge=1, le=1000,
        description="MQTT senders (topics) served at once; the rest wait their turn, round-robin",
    )
    sender_turns_per_round: int = Field(
        default=32, ge=1, le=1000,
        description="MQTT senders' turns started per round of the event loop (keeps its rounds short)",
    )
    z2m_bases: str = Field(
        default="zigbee2mqtt", description="Zigbee2MQTT base topics the bridge subscribes under (comma-separated)"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if not value:
            return None  # an empty variable means unset
        if not re.match(r"^(mqtt|mqtts|tcp|ssl)://[^\s/]+", value):
            raise ValueError(f"must be an mqtt:// or mqtts:// URL, got {value!r}")
        return value

    @property
    def z2m_base_topics(self) -> tuple[str, ...]:
        bases = tuple(b.strip().strip("/") for b in self.z2m_bases.split(","))
        return tuple(b for b in bases if b) or ("zigbee2mqtt",)

    async def summary(self, adapter: Any | None, failure: str | None) -> list[str]:
        """'connected', 'NOT connected yet' or 'off'; waits a little for the first connection."""
        if not self.url:
            return ["off (set SOSBRIDGE_MQTT_URL)"]
        url = redact_url(self.url)
        if failure:
            return [f"{url}: failed to start: {failure}"]
        subscribed = getattr(getattr(adapter, "conn", None), "subscribed", None)
        if subscribed is None or not hasattr(subscribed, "wait"):
            return [f"{url} (connection state unknown)"]
        if await wait_event(subscribed, CONNECT_WAIT_S):
            return [f"{url}: connected"]
        return [f"{url}: NOT connected yet (retrying in the background; presses over MQTT wait at the broker)"]
