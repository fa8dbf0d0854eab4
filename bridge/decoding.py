"""Decoder contract: pure, synchronous functions from a raw frame to decoded events.

A decoder turns transport bytes into a JSON-like document (`parse`), and the device profile's mapping
rules turn that document into `Decoded` events. Decoders with binary or line protocols may instead
return `Decoded` events directly. Decoders never do I/O; adapters resolve the device and call the pipeline.

A decoder separates what makes a frame an alarm (type, status bits, event code: unreadable means
DecodeError) from what describes it (location, time, battery, cells): a descriptive part that does not
parse is left out and named in the attribute `decode_warnings`, never a reason to refuse an alarm
(docs/devices/partial-frames.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

from bridge.model import AlertKind, Location, Observation, ObservationAction, Severity

if TYPE_CHECKING:
    from bridge.profiles import DeviceProfile


DECODE_WARNINGS = "decode_warnings"  # attribute: the descriptive parts of a frame that were dropped


class DecodeError(ValueError):
    """The frame is malformed; the message is safe to show the sender."""


class UndeclaredKind(DecodeError):
    """The frame asks for an alert kind its device's profile does not declare."""

    code = "undeclared_kind"


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: bytes
    meta: dict[str, str] = Field(default_factory=dict, description="topic, port, sender, content type ...")
    retained: bool = False


# "unmatched": the frame was understood but no mapping of the profile applies. It is never submitted:
# the ingress counts it, logs it and tells the sender, so a frame is never dropped silently.
DecodedAction = ObservationAction | Literal["unmatched"]


class Decoded(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: DecodedAction = "alert"
    kind: AlertKind | None = None
    location: Location | None = None
    message_id: str | None = None
    occurred_at: datetime | None = None
    silent: bool = False
    attributes: dict[str, Any] = Field(default_factory=dict)
    device_ref: str | None = Field(default=None, description="Identity found inside the frame, e.g. a DevEUI")
    reason: str | None = None
    severity: Severity | None = None
    language: str | None = None
    # A level-triggered field (a zone bit that stays set): the ingress passes only its edges.
    state_key: str | None = Field(default=None, description="Which state this event reports, e.g. 'sos'")
    state_on: bool | None = None

    def to_observation(self, device_id: str, transport: str, raw: str | None = None, **extra: Any) -> Observation:
        if self.action == "unmatched":
            raise ValueError("an unmatched frame is never an observation")
        return Observation(
            device_id=device_id,
            transport=transport,
            action=self.action,
            severity=self.severity,
            language=self.language,
            kind=self.kind,
            message_id=self.message_id,
            occurred_at=self.occurred_at,
            location=self.location,
            silent=self.silent,
            attributes=self.attributes,
            raw=raw,
            reason=self.reason,
            **extra,
        )


class Decoder(Protocol):
    """`decode(frame, profile) -> list[Decoded]`; raise DecodeError with a reason on bad input."""

    def __call__(self, frame: Frame, profile: DeviceProfile) -> list[Decoded]: ...


def parse_json_object(payload: bytes, limit: int = 64 * 1024) -> dict[str, Any]:
    """A JSON object from a device, strictly: no NaN/Infinity, no integers beyond 64 bits, bounded nesting
    (orjson refuses all three, and parses several times faster than json with per-number hooks)."""
    if len(payload) > limit:
        raise DecodeError(f"payload of {len(payload)} bytes exceeds {limit}")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # Bad UTF-8, bad syntax, NaN/Infinity, an integer over 64 bits, or nesting deeper than 1,024.
        raise DecodeError(f"invalid JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise DecodeError("expected a JSON object")
    return doc


def json_fields_decoder(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    """The generic decoder: a JSON object mapped entirely by the profile's rules."""
    from bridge.profiles import apply_profile

    return apply_profile(parse_json_object(frame.payload), profile, frame.meta)


_DECODERS: dict[str, Callable[..., list[Decoded]]] = {}


def decoders() -> dict[str, Callable[..., list[Decoded]]]:
    """Every decoder registered under the `sosbridge.decoders` entry point group (built-ins included)."""
    if not _DECODERS:
        from bridge.plugins import load_group

        for plugin in load_group("sosbridge.decoders"):
            _DECODERS[plugin.name] = plugin.obj
        _DECODERS.setdefault("json", json_fields_decoder)
    return _DECODERS


def get_decoder(name: str) -> Callable[..., list[Decoded]]:
    try:
        return decoders()[name]
    except KeyError:
        raise DecodeError(f"no decoder named {name!r} is installed") from None
