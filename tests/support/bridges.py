"""An embedded bridge delivering to an embedded reference receiver, on loopback: no mocks of our code."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device, Person
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.ports import free_port


@dataclass
class BridgeEnv:
    bridge: EmbeddedBridge
    receiver: EmbeddedReceiver
    settings: Settings
    secret: str
    platform_token: str

    @property
    def url(self) -> str:
        return self.bridge.url

    @property
    def store(self) -> Any:
        return self.bridge.runtime.store

    async def add_device(self, device_id: str, token: str | None = None, **fields: Any) -> str:
        token = token or secrets.token_urlsafe(24)
        fields.setdefault("person", Person(name=f"Person {device_id}", language="en-GB"))
        await self.store.put_device(Device(device_id=device_id, **fields))
        await self.store.set_credential(device_id, "token", token)
        return token


def bridge_settings(tmp_path: Path, receiver_url: str, secret: str, platform_token: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db": str(tmp_path / "bridge.db"),
        "data_dir": str(tmp_path),
        "http_port": free_port(),
        "platform_url": receiver_url,
        "platform_secret": secret,
        "platform_token": platform_token,
        "admin_token": "admin-" + secrets.token_hex(8),
        "retry_base_s": 0.05,
        "retry_max_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_bridge(tmp_path: Path, auto_ack_s: float | None = 0.05, **overrides: Any) -> AsyncIterator[BridgeEnv]:
    """An embedded bridge delivering to an embedded reference receiver that auto-acknowledges."""
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    async with EmbeddedReceiver(
        secret=secret, jsonl_path=tmp_path / "contacts.jsonl", platform_token=token, auto_ack_s=auto_ack_s
    ) as rx:
        settings = bridge_settings(tmp_path, rx.url, secret, token, **overrides)
        async with EmbeddedBridge(settings) as eb:
            rx.receiver.bridge_url = eb.url
            yield BridgeEnv(eb, rx, settings, secret, token)

