"""The EIDO subscriber side for the tests: read and send messages with a deadline (the certificates come
from simulator/platform/pki.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.connection import Connection

from simulator.platform.pki import Pki, make_pki

__all__ = ["Pki", "make_pki", "recv", "send"]


async def recv(ws: Connection, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        message = json.loads(await ws.recv())
    assert isinstance(message, dict)
    return message


async def send(ws: Connection, message: dict[str, Any]) -> None:
    async with asyncio.timeout(5):
        await ws.send(json.dumps(message))
