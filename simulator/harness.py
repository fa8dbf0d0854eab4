"""A whole embedded stack for the demo, `sim run`, `sim load` and tests: receiver, broker, bridge."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.embedded import EmbeddedBridge
from bridge.receiver import EmbeddedReceiver
from bridge.serving import free_port


@dataclass
class Stack:
    bridge: EmbeddedBridge
    receiver: EmbeddedReceiver
    settings: Settings
    mqtt_url: str | None
    workdir: Path


@contextlib.asynccontextmanager
async def embedded_broker(enabled: bool = True) -> AsyncIterator[str | None]:
    """The in-process MQTT broker (amqtt), or None when it or the MQTT adapter is not installed."""
    if not enabled:
        yield None
        return
    try:
        from device_adapters.mqtt.embedded_broker import EmbeddedBroker

        broker = EmbeddedBroker(port=free_port())
        await broker.__aenter__()
    except Exception:  # the stack still runs every other transport
        yield None
        return
    try:
        yield broker.url
    finally:
        await broker.__aexit__(None, None, None)


async def wait_adapters_ready(eb: EmbeddedBridge, timeout: float = 10.0) -> None:
    """Adapters that connect out (MQTT) are ready only once subscribed; steps must not race them."""
    for adapter in eb.runtime.adapters:
        wait_ready = getattr(adapter, "wait_ready", None)
        if wait_ready is not None and adapter.name in eb.runtime.started_adapters:
            await wait_ready(timeout)


@contextlib.asynccontextmanager
async def embedded_stack(
    workdir: Path,
    *,
    mqtt_url: str | None = None,
    embedded_mqtt: bool = True,
    auto_ack_s: float | None = 0.3,
    auto_resolve_s: float | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    async with (
        EmbeddedReceiver(
            secret=secret,
            jsonl_path=workdir / "contacts.jsonl",
            platform_token=token,
            auto_ack_s=auto_ack_s,
            auto_resolve_s=auto_resolve_s,
        ) as rx,
        embedded_broker(embedded_mqtt and mqtt_url is None) as broker_url,
    ):
        values: dict[str, Any] = {
            "db": str(workdir / "bridge.db"),
            "data_dir": str(workdir),
            "http_port": free_port(),
            "platform_url": rx.url,
            "platform_secret": secret,
            "platform_token": token,
            "admin_token": secrets.token_hex(16),
            "default_status": "exercise",
            "mqtt_url": mqtt_url or broker_url,
            "mqtt_client_id": f"sosbridge-{secrets.token_hex(4)}",
            "coap_enabled": True,
            "coap_port": free_port(),
            "retry_base_s": 0.2,
            "retry_max_s": 2.0,
        }
        values.update(overrides)
        settings = Settings(**values)
        async with EmbeddedBridge(settings) as eb:
            rx.receiver.bridge_url = eb.url
            await wait_adapters_ready(eb)
            yield Stack(eb, rx, settings, settings.mqtt_url, workdir)
