"""Drive a bridge and a reference receiver that run elsewhere (`sim run --bridge-url ... --receiver-url ...`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bridge.core.model import Device
from simulator.platform.receiver import ContactPredicate


class RemoteReceiver:
    """The scenario runner's view of a `sosbridge receiver` process, polled over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._contacts: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []  # the receiver's own records, `received_at` included

    @property
    def contacts(self) -> list[dict[str, Any]]:
        return self._contacts

    async def refresh(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as client:
            self.records = (await client.get(f"{self.base_url}/contacts")).json()
        self._contacts = [r["contact"] for r in self.records if r.get("contact")]
        return self._contacts

    async def wait_for(self, predicate: ContactPredicate, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            contacts = await self.refresh()
            if predicate(contacts):
                return contacts
            if time.monotonic() > deadline:
                raise TimeoutError("expected contacts did not arrive")
            await asyncio.sleep(0.2)


class RemoteRegistry:
    """Registers scenario devices through the bridge's admin API (`POST /v1/devices`)."""

    def __init__(self, bridge_url: str, admin_token: str) -> None:
        self.bridge_url = bridge_url.rstrip("/")
        self.admin_token = admin_token
        self.tokens: dict[str, str] = {}

    async def put_device(self, device: Device) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(
                f"{self.bridge_url}/v1/devices",
                json=device.model_dump(mode="json"),
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
            r.raise_for_status()
            self.tokens[device.device_id] = r.json()["token"]

    async def set_credential(self, device_id: str, scheme: str, secret: str, hashed: bool = True) -> None:
        if scheme != "token":
            raise NotImplementedError(f"credential {scheme!r} can only be set on the bridge host (sosbridge devices)")
