"""`async with EmbeddedBridge(settings) as eb:` — a whole bridge with its HTTP API on a loopback port."""

from __future__ import annotations

from typing import Any

from bridge.app.api.app import create_app
from bridge.app.config import Settings
from bridge.app.http_server import http_server_options
from bridge.app.runtime import BridgeRuntime
from bridge.infra.serving import free_port, serve_app


class EmbeddedBridge:
    def __init__(self, settings: Settings) -> None:
        if not settings.http_port:
            settings = settings.model_copy(update={"http_port": free_port(settings.http_host)})
        self.settings = settings
        self.runtime = BridgeRuntime(settings, processes=settings.workers or 1)  # one, unless asked
        self._cm: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    async def __aenter__(self) -> EmbeddedBridge:
        options = http_server_options(self.settings)
        self._cm = serve_app(create_app(self.runtime), self.settings.http_host, self.settings.http_port, options)
        await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(None, None, None)
