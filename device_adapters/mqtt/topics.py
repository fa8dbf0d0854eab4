"""Topic routing (pure): which ecosystem a topic belongs to and which registry identity it names.

A device is bound to its topic: the identity found here is looked up with `store.find_device(scheme,
value)` (our own topic carries the device id itself), so a message on another device's topic cannot
speak for it, and the broker ACL keeps each device's credentials on its own topics.

A device type is data end to end: a `{scheme}` level in an MQTT profile's `match.topic`
(`shellies/{shelly}/input_event/0`) adds that filter to the subscriptions and routes its topics to the
device whose identifier of that scheme is the level's value (`profile_topics`, `route`). Built-in families
are checked after the profiles' patterns. See docs/devices/index.md.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from bridge.devices.profiles import (
    DeviceProfile,
    ProfileRegistry,
    topic_bindings,
    topic_filter,
    topic_matches,
    topic_patterns,
    topic_schemes,
)

RouteKind = Literal["own", "reply", "z2m", "z2m_bridge", "chirpstack", "ttn", "owntracks", "hermes", "profile"]

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


@dataclass(frozen=True)
class ProfileTopic:
    """One `match.topic` alternative of an MQTT profile that binds at least one `{scheme}` level."""

    pattern: str
    profile_id: str
    schemes: tuple[str, ...]

    @cached_property
    def first(self) -> str:
        """The pattern's first level when it is a literal (a topic must start with it), else ""."""
        head = self.pattern.split("/", 1)[0]
        return "" if head in ("+", "#") or head.startswith("{") else head


def profile_topics_of(profiles: list[DeviceProfile]) -> tuple[ProfileTopic, ...]:
    """The binding topic patterns of these profiles, most specific (fewest wildcards) first. Pure."""
    found = [ProfileTopic(pattern, p.id, tuple(topic_schemes(pattern)))
             for p in profiles if p.transport == "mqtt" for pattern in topic_patterns(p) if topic_schemes(pattern)]
    return tuple(sorted(found, key=lambda t: (t.pattern.count("+") + t.pattern.count("#") * 10, t.pattern)))


_CACHE: weakref.WeakKeyDictionary[ProfileRegistry, tuple[ProfileTopic, ...]] = weakref.WeakKeyDictionary()


def profile_topics(registry: ProfileRegistry | None) -> tuple[ProfileTopic, ...]:
    """`profile_topics_of` the registry's profiles, computed once per registry."""
    if registry is None:
        return ()
    if (cached := _CACHE.get(registry)) is None:
        cached = _CACHE[registry] = profile_topics_of(list(registry.profiles.values()))
    return cached


def builtin_subscriptions(z2m_bases: tuple[str, ...] = ("zigbee2mqtt",)) -> list[str]:
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


def covered(topic_filter_: str, by: list[str]) -> bool:
    """Whether every topic `topic_filter_` matches is also matched by one of the filters `by` (a `+` or `#`
    level of `topic_filter_` is read as a level name: exact for the filters this adapter builds)."""
    return any(topic_matches(f, topic_filter_) for f in by)


def subscriptions(z2m_bases: tuple[str, ...] = ("zigbee2mqtt",), registry: ProfileRegistry | None = None) -> list[str]:
    """The built-in families' filters, then each profile's `{scheme}` pattern as a filter (unless a built-in
    filter already covers it: one delivery per message)."""
    subs = builtin_subscriptions(z2m_bases)
    for bound in profile_topics(registry):
        wanted = topic_filter(bound.pattern)
        if wanted not in subs and not covered(wanted, subs):
            subs.append(wanted)
    return subs


def profile_route(topic: str, bound_topics: tuple[ProfileTopic, ...]) -> Route | None:
    """The route of a topic one of the profiles' `{scheme}` patterns matches: its first scheme's level is
    the identity (the ingress checks the others against the device). Pure."""
    # The first level rejects almost every pattern without splitting it (issue 27: matching each frame's
    # topic against every catalogue pattern in turn was 2 % of a flood's CPU).
    head = topic.split("/", 1)[0]
    for bound in bound_topics:
        if bound.first and bound.first != head:
            continue
        levels = topic_bindings(bound.pattern, topic)
        if levels:
            scheme = bound.schemes[0]
            meta = {"topic": topic, "ecosystem": "profile", "profile": bound.profile_id}
            return Route("profile", scheme, levels[scheme], meta=meta)
    return None


def route(topic: str, z2m_bases: tuple[str, ...] = ("zigbee2mqtt",),
          registry: ProfileRegistry | None = None) -> Route | None:
    if (found := profile_route(topic, profile_topics(registry))) is not None:
        return found
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


def profile_warnings(profile: DeviceProfile) -> list[str]:
    """Why the MQTT adapter could never deliver a frame to this profile (empty: it can). Registered under
    `sosbridge.profile_checks` for `sosbridge profiles check`."""
    if profile.transport != "mqtt":
        return []
    builtin = builtin_subscriptions()
    out = []
    for pattern in topic_patterns(profile):
        if topic_schemes(pattern) or covered(topic_filter(pattern), builtin):
            continue
        if any(topic_matches(pattern, f) or topic_matches(f, pattern) for f in builtin):
            continue  # overlaps a built-in family (a z2m base, an application's events): reachable there
        out.append(f"no transport delivers frames on {pattern!r}: the bridge subscribes to the built-in "
                   "families and to profile topics with a {scheme} level that names the device "
                   "(e.g. shellies/{shelly}/input_event/0)")
    return out
