"""The frame contract: what a transport hands in (`Frame`), what a decoder gives back (`Decoded`), and the
one error a decoder raises (`DecodeError`, its message safe to show the sender). Pure data, no I/O.
See docs/ingress.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from bridge.core.model import DECODE_WARNINGS, AlertKind, Location, Observation, ObservationAction, Severity

__all__ = ["DECODE_WARNINGS", "DecodeError", "Decoded", "DecodedAction", "Frame", "UndeclaredKind", "parse_json_object"]


class DecodeError(ValueError):
    """The frame is malformed; the message is safe to show the sender. Each subclass is one meaning and
    carries the refusal code the ingress counts and answers with (matched with isinstance, never by name)."""

    code = "invalid"


class ChecksumError(DecodeError):
    """The frame's checksum or CRC does not hold: corrupted on its way."""

    code = "bad_checksum"


class LengthError(DecodeError):
    """The declared length does not match the content: a truncated or corrupted frame."""

    code = "bad_length"


class KeyRefused(DecodeError):
    """An encrypted frame that does not decrypt with the device's key, or a device that has no key (or a
    plain frame from a device that must encrypt)."""

    code = "bad_key"


class StaleError(DecodeError):
    """A signed timestamp outside the accepted window: a replay or a badly wrong clock."""

    code = "stale_timestamp"


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
