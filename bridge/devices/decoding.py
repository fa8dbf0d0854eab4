"""Decoder contract: pure, synchronous functions from a raw frame to decoded events.

A decoder turns transport bytes into a JSON-like document (`parse`), and the device profile's mapping
rules turn that document into `Decoded` events. Decoders with binary or line protocols may instead
return `Decoded` events directly. Decoders never do I/O; transports hand frames to the ingress, which
calls the decoder. The frame types live in bridge/devices/frames.py and are re-exported here, the one
module a decoder plug-in imports. See docs/integrators/plugins.md.

A decoder separates what makes a frame an alarm (type, status bits, event code: unreadable means
DecodeError) from what describes it (location, time, battery, cells): a descriptive part that does not
parse is left out and named in the attribute `decode_warnings`, never a reason to refuse an alarm
(docs/devices/partial-frames.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bridge.devices.fixage import judge, max_fix_age, reference_time
from bridge.devices.frames import (
    DECODE_WARNINGS,
    ChecksumError,
    Decoded,
    DecodedAction,
    DecodeError,
    Frame,
    KeyRefused,
    LengthError,
    StaleError,
    UndeclaredKind,
    parse_json_object,
)
from bridge.devices.profiles import DeviceProfile, apply_profile

__all__ = [
    "DECODE_WARNINGS",
    "ChecksumError",
    "DecodeError",
    "Decoded",
    "DecodedAction",
    "Decoder",
    "Frame",
    "KeyRefused",
    "LengthError",
    "StaleError",
    "UndeclaredKind",
    "decode_frame",
    "decoders",
    "get_decoder",
    "json_fields_decoder",
    "parse_json_object",
]


class Decoder(Protocol):
    """`decode(frame, profile) -> list[Decoded]`; raise DecodeError with a reason on bad input."""

    def __call__(self, frame: Frame, profile: DeviceProfile) -> list[Decoded]: ...


def json_fields_decoder(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    """The generic decoder: a JSON object mapped entirely by the profile's rules."""
    return apply_profile(parse_json_object(frame.payload), profile, frame.meta)


_DECODERS: dict[str, Callable[..., list[Decoded]]] = {}


def decoders() -> dict[str, Callable[..., list[Decoded]]]:
    """Every decoder registered under the `sosbridge.decoders` entry point group (built-ins included)."""
    if not _DECODERS:
        from bridge.infra.plugins import load_group

        for plugin in load_group("sosbridge.decoders"):
            _DECODERS[plugin.name] = plugin.obj
        _DECODERS.setdefault("json", json_fields_decoder)
    return _DECODERS


def get_decoder(name: str) -> Callable[..., list[Decoded]]:
    try:
        return decoders()[name]
    except KeyError:
        raise DecodeError(f"no decoder named {name!r} is installed") from None


def decode_frame(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    """The profile's decoder, then the one fix-age rule (bridge/devices/fixage.py) with the frame's arrival
    time (`meta.received_at`, else now): what the ingress does with every frame, whatever the decoder."""
    events = get_decoder(profile.decoder)(frame, profile)
    return judge(events, reference_time(frame.meta), max_fix_age(profile))
