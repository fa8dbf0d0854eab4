"""Identify: which registered device sent a frame, and which profile decodes it.

A transport states what it knows about the sender as a `Claim`: a device it has already authenticated
(bearer token, OSCORE context, HMAC signature, our own per-device topic behind the broker ACL), and/or
identifiers found in the topic, address or frame (a zigbee2mqtt friendly name, a DevEUI, a phone
number), looked up in the registry in order. The device's profile must `match` the frame; a device that
names no profile gets the `fallback` profile whose `match` covers the frame (or the one its port names).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from bridge.core.model import Device, DeviceAuth
from bridge.devices.profiles import DeviceProfile, ProfileRegistry, matches_frame
from bridge.store.base import Store


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
        self._entries: OrderedDict[tuple[object, ...], tuple[float, Device | None]] = OrderedDict()

    async def resolve(self, store: Store, claim: Claim) -> tuple[Device | None, bool]:
        """The device (or None) and whether it was read from the store just now (a cached copy may lack
        the last few seconds' changes, e.g. its latest position: the pipeline re-reads what it needs)."""
        if self.ttl_s <= 0:
            return await resolve_device(store, claim), True
        key = (claim.device_id, claim.identifiers, claim.tenant)
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1], False
        device = await resolve_device(store, claim)
        self._entries[key] = (now + self.ttl_s, device)
        self._entries.move_to_end(key)
        # Oldest first (every entry lives ttl_s): drop the expired, so memory holds only the last ttl_s
        # seconds of senders, not the whole of a flood of distinct devices.
        while self._entries and (len(self._entries) > self.max_entries or next(iter(self._entries.values()))[0] <= now):
            self._entries.popitem(last=False)
        return device, True

    def forget(self) -> None:
        self._entries.clear()


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
