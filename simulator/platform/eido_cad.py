"""The reference platform's NENA-STA-024 end: a police CAD that subscribes to the bridge's EIDO notifier.

Connects with its client certificate, subscribes (`new`), acknowledges every event with eventResponse
200 and keeps each EIDO it received. Docs: docs/platform/eido-websocket.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.infra.aio import stop_tasks


class EidoCad:
    def __init__(self, url: str, tls: ssl.SSLContext) -> None:
        self.url = url
        self.tls = tls
        self.eidos: list[dict[str, Any]] = []
        self.subscribed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EidoCad:
        async with asyncio.timeout(10):
            self._ws = await connect(self.url, ssl=self.tls)
            await self._ws.send(json.dumps({"subscribe": {
                "requestId": "cad-1", "requestType": "EIDO", "requestSubType": "new",
                "requestAccepts": "application/emergency.eido+json", "expires": 3600, "minRate": 30}}))
            answer = json.loads(await self._ws.recv())
        if answer.get("subscribeResponse", {}).get("statusCode") != 200:
            raise RuntimeError(f"EIDO subscription refused: {answer}")
        self._task = asyncio.create_task(self._listen(self._ws), name="eido-cad")
        return self

    async def _listen(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:  # a service loop: __aexit__ closes the socket and cancels it
                message = json.loads(raw)
                event = message.get("event")
                if event is None:
                    continue
                self.eidos.extend(event.get("notification") or [])
                await ws.send(json.dumps({"eventResponse": {"transactionId": event["transactionId"],
                                                            "statusCode": 200, "statusText": "OK"}}))

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._ws.close()
        if self._task is not None:
            await stop_tasks([self._task])
