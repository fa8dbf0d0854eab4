"""Identify: which registered device sent a frame, and which profile decodes it.

A transport states what it knows about the sender as a `Claim`: a device it has already authenticated
(bearer token, OSCORE context, HMAC signature, our own per-device topic behind the broker ACL), and/or
identifiers found in the topic, address or frame (a zigbee2mqtt friendly name, a DevEUI, a phone
number), looked up in the registry in order. The device's profile must `match` the frame; a device that
names no profile gets the `fallback` profile whose `match` covers the frame (or the one its port names).
A `{scheme}` level of a profile's `match.topic` binds that topic level to the device's identifier of that
scheme: a frame whose level names another value is refused (wrong_topic). See docs/devices/index.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cachetools import LRUCache, TTLCache

from bridge.core.model import Device, DeviceAuth
from bridge.devices.profiles import (
    DeviceProfile,
    ProfileRegistry,
    matches_frame,
    topic_bindings,
    topic_patterns,
    topic_schemes,
)
from bridge.store.base import Store, hash_secret

# Identifier schemes the built-in transports look devices up by (Device.identifiers keys): MQTT topic
# families, the watch, DC-09 and serial listeners, OSCORE. Profiles add theirs with `{scheme}` topic levels;
# an adapter plug-in names its own in a `schemes` attribute.
TRANSPORT_SCHEMES = frozenset({
    "mqtt_topic", "z2m", "deveui", "ttn", "owntracks", "hermes_site", "watch", "dc09", "msisdn", "diy_unit",
    "contact_id", "serial_port", "oscore_kid",
})


def profile_schemes(registry: ProfileRegistry) -> frozenset[str]:
    """The schemes the loaded profiles bind with `{scheme}` topic levels. Pure."""
    return frozenset(s for p in registry.profiles.values() for pattern in topic_patterns(p)
                     for s in topic_schemes(pattern))


def bound_schemes(registry: ProfileRegistry, plugin_schemes: frozenset[str] = frozenset()) -> frozenset[str]:
    """Every identifier scheme some transport or loaded profile binds a device with."""
    return TRANSPORT_SCHEMES | profile_schemes(registry) | plugin_schemes


def topic_binding_agrees(profile: DeviceProfile, device: Device, meta: dict[str, str]) -> bool:
    """Pure: every `{scheme}` level of the profile's topic pattern that matches this frame's topic names the
    device's own identifier of that scheme (true when the frame has no topic or the pattern binds nothing)."""
    topic = meta.get("topic")
    if topic is None:
        return True
    for pattern in topic_patterns(profile):
        bound = topic_bindings(pattern, topic)
        if bound is not None and all(device.identifiers.get(k) == v for k, v in bound.items()):
            return True
        if bound is not None and not bound:
            return True
    return not topic_patterns(profile)


@dataclass(frozen=True)
class Claim:
    transport: str
    identifiers: tuple[tuple[str, str], ...] = ()  # (scheme, value) candidates, first found wins
    device_id: str | None = None  # authenticated by the transport, or the device a port is bound to
    tenant: str | None = None  # the device must belong to this tenant (our own topic names it)
    fallback_profile: str | None = None  # operator's choice for devices naming no profile (a serial port's)
    # The operator bound this channel to devices (a GPS on a serial port belonging to a button): a device
    # whose own profile does not speak here is decoded with the channel's fallback profile instead.
    companion: bool = False
    label: str = field(default="")  # how to name the sender in a refusal, when no device is found
    # How the transport authenticated the sender (bridge.core.model.DeviceAuth); carried to every contact.
    auth: DeviceAuth = "none"

    def describe(self) -> str:
        if self.label:
            return self.label
        if self.device_id:
            return f"device {self.device_id!r}"
        if self.identifiers:
            scheme, value = self.identifiers[0]
            return f"{scheme} {value!r}"
        return "sender"


class BindingError(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class DeviceCache:
    """Registry answers for recent claims, for `ttl_s` seconds (a flood from one device, or a storm of
    repeated presses, costs no store read per frame). A registry change (a new or removed device, a new
    profile) takes effect within `ttl_s`; an unknown sender is remembered too, so a flood of frames from
    unregistered senders costs one read per sender per `ttl_s`. Bounded: oldest entries go first."""

    def __init__(self, ttl_s: float = 2.0, max_entries: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        # Every entry lives ttl_s; the oldest go first past max_entries: memory holds only the last ttl_s
        # seconds of senders, not the whole of a flood of distinct devices.
        self._entries: TTLCache[tuple[object, ...], Device | None] = TTLCache(
            max_entries, ttl=max(ttl_s, 1e-9), timer=time.monotonic
        )
        # Devices `by_token` just read from the store, for the same request's `resolve` (bounded: a request
        # refused between the two leaves its entry behind until newer ones push it out).
        self._just_read: LRUCache[tuple[object, ...], tuple[Device, float]] = LRUCache(1024)

    async def resolve(self, store: Store, claim: Claim) -> tuple[Device | None, bool]:
        """The device (or None) and whether it was read from the store just now (a cached copy may lack
        the last few seconds' changes, e.g. its latest position: the pipeline re-reads what it needs)."""
        if self.ttl_s <= 0:
            return await resolve_device(store, claim), True
        key = _claim_key(claim.device_id, claim.identifiers, claim.tenant)
        just_read = self._just_read.pop(key, None)
        if just_read is not None and time.monotonic() - just_read[1] < self.ttl_s:
            return just_read[0], True  # read by `by_token` for this very request: no second read
        if key in self._entries:
            return self._entries[key], False
        device = await resolve_device(store, claim)
        self._entries[key] = device
        return device, True

    async def by_token(self, store: Store, token: str) -> tuple[Device | None, bool]:
        """The device a bearer token belongs to, as `resolve`: cached by the token's digest (never the
        token itself). A token that matches no device is not remembered: one registered meanwhile (by
        another process) works at once, and a guessed token is refused and rate-limited by the caller."""
        if self.ttl_s <= 0:
            return await store.device_for_token(token), True
        key = ("token", hash_secret(token))
        if key in self._entries:
            return self._entries[key], False
        device = await store.device_for_token(token)
        if device is not None:
            self._entries[key] = device
            # The request goes on to `resolve` with the device's own claim: it gets this record, fresh.
            self._just_read[_claim_key(device.device_id)] = (device, time.monotonic())
        return device, True

    def forget(self) -> None:
        self._entries.clear()


def _claim_key(device_id: str | None, identifiers: tuple[tuple[str, str], ...] = (),
               tenant: str | None = None) -> tuple[object, ...]:
    """A claim's key in the cache; a device's own claim (its id alone, as a token names it) by default."""
    return (device_id, identifiers, tenant)


async def resolve_device(store: Store, claim: Claim) -> Device | None:
    device: Device | None = None
    for scheme, value in claim.identifiers:
        if value:
            device = await store.find_device(scheme, value)
            if device is not None:
                break
    if device is None and claim.device_id is not None:
        device = await store.get_device(claim.device_id)
    if device is not None and claim.tenant is not None and device.tenant_id != claim.tenant:
        return None  # another tenant's device is indistinguishable from an unknown one
    return device


def choose_profile(registry: ProfileRegistry, device: Device, claim: Claim, meta: dict[str, str]) -> DeviceProfile:
    """Pure: the device's own profile if it speaks for this frame, else the fallback. Raises BindingError."""
    if device.profile_id:
        profile = registry.get(device.profile_id)
        if profile is None:
            raise BindingError("no_profile", f"profile {device.profile_id!r} of device {device.device_id!r} "
                                             "is not installed")
        if profile.transport != claim.transport and not _voice(profile.transport, claim.transport):
            raise BindingError("wrong_transport", f"profile {profile.id!r} speaks {profile.transport}, "
                                                  f"not {claim.transport}")
        if not matches_frame(profile, meta):
            if claim.companion and (companion := _fallback(registry, claim, meta)) is not None:
                return companion
            raise BindingError("wrong_topic", f"profile {profile.id!r} does not speak on this "
                                              f"{'topic' if 'topic' in meta else 'channel'}")
        if not topic_binding_agrees(profile, device, meta):
            raise BindingError("wrong_topic", f"this topic names another device than {device.device_id!r}")
        return profile
    fallback = _fallback(registry, claim, meta)
    if fallback is None:
        raise BindingError("no_profile", f"device {device.device_id!r} has no profile for this "
                                         f"{'topic' if 'topic' in meta else claim.transport + ' frame'}")
    return fallback


def _fallback(registry: ProfileRegistry, claim: Claim, meta: dict[str, str]) -> DeviceProfile | None:
    named = registry.get(claim.fallback_profile) if claim.fallback_profile else None
    return named or registry.fallback_for(claim.transport, meta)


def _voice(profile_transport: str, claim_transport: str) -> bool:
    return profile_transport == "voice" and claim_transport in ("alexa", "assist", "voice")
