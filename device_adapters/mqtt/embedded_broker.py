"""An in-process MQTT broker (amqtt, MQTT 3.1.1 only) on 127.0.0.1 for `sosbridge demo` and
`sosbridge serve --embedded-broker`. amqtt is the optional `embedded` extra; production and the tests
use Mosquitto. The URL carries `?version=3.1.1` so the adapter does not try MQTT v5 against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

from bridge.infra.serving import free_port

log = logging.getLogger("sosbridge.mqtt.broker")


class EmbeddedBroker:
    """`async with EmbeddedBroker(port=0) as broker:` then connect to `broker.url`."""

    setting: ClassVar[str] = "mqtt_url"  # the key `serve --embedded-broker` sets to `url` (MqttSettings.url)

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}?version=3.1.1"

    async def __aenter__(self) -> EmbeddedBroker:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise RuntimeError("the embedded broker needs the optional extra: sos-bridge[embedded]") from exc
        config = {
            # Bind to loopback only: amqtt's default listener is 0.0.0.0:1883.
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded mqtt broker started", extra={"url": self.url})
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._broker.shutdown(), timeout=5)
            self._broker = None
