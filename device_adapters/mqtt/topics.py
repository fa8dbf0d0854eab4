"""Topic routing (pure): which ecosystem a topic belongs to and which registry identity it names.

A device is bound to its topic: the identity found here is looked up with `store.find_device(scheme,
value)` (our own topic carries the device id itself), so a message on another device's topic cannot
speak for it, and the broker ACL keeps each device's credentials on its own topics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RouteKind = Literal["own", "reply", "z2m", "z2m_bridge", "chirpstack", "ttn", "owntracks", "hermes"]

# Identifier schemes this adapter binds devices with (Device.identifiers keys).
SCHEMES = ("mqtt_topic", "z2m", "deveui", "owntracks", "hermes_site")


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    scheme: str | None = None  # registry identifier scheme; None for our own topic (device id in it)
    value: str | None = None
    tenant: str | None = None
    device: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Rate key for answers to senders the registry does not know (error-topic publishes only)."""
        return f"{self.kind}:{self.tenant or ''}/{self.device or self.value or ''}"


def subscriptions(z2m_bases: tuple[str, ...] = ("zigbee2mqtt",)) -> list[str]:
    subs = [
        "sosbridge/+/+/alert",
        "sosbridge/+/+/reply",
        "application/+/device/+/event/+",
        "v3/+/devices/+/up",
        "owntracks/+/+",
        "owntracks/+/+/event",
        "hermes/intent/#",
    ]
    subs += [f"{base}/#" for base in z2m_bases]
    return subs


def route(topic: str, z2m_bases: tuple[str, ...] = ("zigbee2mqtt",)) -> Route | None:
    parts = topic.split("/")
    meta = {"topic": topic}
    if len(parts) == 4 and parts[0] == "sosbridge" and parts[3] == "alert":
        return Route("own", tenant=parts[1], device=parts[2], meta=meta | {"ecosystem": "sosbridge"})
    if len(parts) == 4 and parts[0] == "sosbridge" and parts[3] == "reply":
        # The person's text for the platform (docs/platform/messages.md), on the device's own topic.
        return Route("reply", tenant=parts[1], device=parts[2], meta=meta | {"ecosystem": "sosbridge"})
    if len(parts) == 6 and parts[0] == "application" and parts[2] == "device" and parts[4] == "event":
        meta |= {"network": "chirpstack", "ecosystem": "chirpstack", "event": parts[5], "application_id": parts[1]}
        return Route("chirpstack", "deveui", parts[3].lower(), meta=meta)
    if len(parts) == 5 and parts[0] == "v3" and parts[2] == "devices" and parts[4] == "up":
        app, _, tenant = parts[1].partition("@")
        meta |= {"network": "ttn", "ecosystem": "ttn", "event": "up", "application_id": app, "ttn_tenant": tenant}
        # The DevEUI inside the payload is the identity; the topic's device id is the fallback binding.
        return Route("ttn", "ttn", f"{app}/{parts[3]}", meta=meta)
    if parts[0] == "owntracks" and len(parts) in (3, 4) and (len(parts) == 3 or parts[3] == "event"):
        meta |= {"subtopic": parts[3] if len(parts) == 4 else "", "ecosystem": "owntracks"}
        return Route("owntracks", "owntracks", f"{parts[1]}/{parts[2]}", meta=meta)
    if len(parts) >= 3 and parts[0] == "hermes" and parts[1] == "intent":
        # The site id inside the payload is the identity; intent names may contain '/' and ':'.
        return Route("hermes", "hermes_site", None, meta=meta | {"ecosystem": "hermes"})
    for base in z2m_bases:
        base_parts = base.split("/")
        n = len(base_parts)
        if parts[:n] != base_parts or len(parts) <= n:
            continue
        rest = parts[n:]
        if rest[0] == "bridge":
            if rest[1:] == ["state"]:
                return Route("z2m_bridge", value=base, meta=meta | {"gateway": base})
            return None  # bridge/event, bridge/devices, bridge/logging ...: not device events
        name = rest[0]
        sub = "/".join(rest[1:])
        if sub in ("set", "get") or sub.startswith(("set/", "get/")):
            return None  # commands to devices, published by others
        meta |= {"subtopic": sub, "gateway": base, "friendly_name": name, "ecosystem": "zigbee2mqtt"}
        return Route("z2m", "z2m", name, meta=meta)
    return None
