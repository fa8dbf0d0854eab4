"""SOSBRIDGE_MQTT_URL parsing: `mqtt[s]://[user[:password]@]host[:port][?version=5|3.1.1&ca=/path]`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    mqtt5: bool
    ca_file: str | None = None
    insecure: bool = False

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"unsupported MQTT URL scheme {scheme!r} (use mqtt:// or mqtts://)")
    tls = scheme in ("mqtts", "ssl")
    if not parts.hostname:
        raise ValueError("MQTT URL needs a host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    version = query.get("version", "5")
    if version not in ("5", "3.1.1", "311"):
        raise ValueError(f"unsupported MQTT version {version!r} (5 or 3.1.1)")
    return BrokerUrl(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        mqtt5=version == "5",
        ca_file=query.get("ca"),
        insecure=query.get("insecure") in ("1", "true"),
    )
