"""The normalised data model every adapter, store and sink speaks.

Vendor vocabularies map onto the closed `AlertKind` set in device profiles; anything vendor-specific
rides in `attributes`. Location quality (accuracy, fix time, source, last-known flag) travels with the
location so the contact platform can judge how far to trust it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bridge.core.text import clean_value, needs_cleaning

# Observation/alert attribute naming the descriptive parts of a frame a decoder had to drop
# (docs/devices/partial-frames.md).
DECODE_WARNINGS = "decode_warnings"


class AlertKind(StrEnum):
    sos = "sos"
    panic = "panic"
    duress = "duress"
    fall = "fall"
    no_movement = "no_movement"
    medical = "medical"
    fire = "fire"
    check_in_missed = "check_in_missed"
    device_offline = "device_offline"
    tamper = "tamper"
    low_battery = "low_battery"
    device_removed = "device_removed"
    test = "test"


class Severity(StrEnum):
    """CAP 1.2 severity words, lower-cased; ordered from least to most severe."""

    unknown = "unknown"
    minor = "minor"
    moderate = "moderate"
    severe = "severe"
    extreme = "extreme"

    @property
    def rank(self) -> int:
        return _SEVERITY_ORDER.index(self)

    def raised(self) -> Severity:
        return _SEVERITY_ORDER[min(self.rank + 1, len(_SEVERITY_ORDER) - 1)]


_SEVERITY_ORDER = [Severity.unknown, Severity.minor, Severity.moderate, Severity.severe, Severity.extreme]

LIFE_SAFETY_KINDS = frozenset(
    {
        AlertKind.sos,
        AlertKind.panic,
        AlertKind.duress,
        AlertKind.fall,
        AlertKind.no_movement,
        AlertKind.medical,
        AlertKind.fire,
    }
)

DEFAULT_SEVERITY: dict[AlertKind, Severity] = {
    **{k: Severity.severe for k in LIFE_SAFETY_KINDS},
    AlertKind.check_in_missed: Severity.moderate,
    AlertKind.device_offline: Severity.minor,
    AlertKind.tamper: Severity.moderate,
    AlertKind.low_battery: Severity.minor,
    AlertKind.device_removed: Severity.moderate,
    AlertKind.test: Severity.minor,
}

# Kinds that are always silent towards the caller: a duress alarm must never make a sound.
ALWAYS_SILENT_KINDS = frozenset({AlertKind.duress})


class AlertState(StrEnum):
    received = "received"
    forwarded = "forwarded"
    acknowledged = "acknowledged"
    resolved = "resolved"
    cancelled = "cancelled"


FINAL_STATES = frozenset({AlertState.resolved, AlertState.cancelled})

ContactStatus = Literal["actual", "exercise", "test"]
# How the transport authenticated the device that sent an observation (docs/operations/security.md):
# none (the frame's own identifier: watch, plain DC-09, serial), token (a per-device bearer token), hmac (a
# per-device signature), oscore (an OSCORE context), aes (a DC-09 account key), broker (the MQTT broker's
# client authentication and ACL).
DeviceAuth = Literal["none", "token", "hmac", "oscore", "aes", "broker"]

LocationSource = Literal["gnss", "wifi", "cell", "fixed", "registered_address", "last_known", "network"]


def utcnow() -> datetime:
    return datetime.now(UTC)


# Validation context for documents read back from the store (`Model.model_validate_json(doc, context=STORED)`):
# their text was cleaned on the way in, so it is not scanned again on every read.
STORED: dict[str, bool] = {"stored": True}


class CleanModel(BaseModel):
    """Every string field (nested in lists and dicts too) loses C0 controls and lone surrogates on the way
    in (bridge.core.text): whatever a device, registry or decoder sends, every renderer gets valid text."""

    @model_validator(mode="after")
    def _clean_text(self, info: ValidationInfo) -> Any:
        # Only the fields whose type can hold free text (nested models clean themselves; enums, literals,
        # numbers and times were validated against what they may be); a C regex search per string.
        if info.context is STORED:
            return self  # read back from the store: cleaned when it came in (issue 27: 7 % of the CPU)
        values = self.__dict__
        for name in text_fields(type(self)):
            value = values.get(name)
            if value is not None and needs_cleaning(value):
                object.__setattr__(self, name, clean_value(value))
        return self


_TEXT_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}


def text_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    """The names of `cls`'s fields that may hold a string, directly or inside a list, tuple or dict."""
    names = _TEXT_FIELDS.get(cls)
    if names is None:
        names = _TEXT_FIELDS[cls] = tuple(
            name for name, info in cls.model_fields.items() if may_hold_text(info.annotation)
        )
    return names


def may_hold_text(annotation: Any) -> bool:
    if annotation is str or annotation is Any:
        return True
    if isinstance(annotation, type):
        if issubclass(annotation, Enum | BaseModel):
            return False
        return issubclass(annotation, str | list | dict | tuple | set | frozenset)
    origin = get_origin(annotation)
    if origin is Literal:
        return False
    if origin in (list, dict, tuple, set, frozenset):
        return True
    return any(may_hold_text(arg) for arg in get_args(annotation))


class CivicAddress(CleanModel):
    """A subset of RFC 5139 civic address elements, as used in the UK."""

    model_config = ConfigDict(extra="forbid")

    country: str = "GB"
    a1: str | None = Field(default=None, description="Country subdivision, e.g. Scotland")
    a2: str | None = Field(default=None, description="Council area")
    a3: str | None = Field(default=None, description="City or town")
    a6: str | None = Field(default=None, description="Street")
    hno: str | None = Field(default=None, description="House number")
    loc: str | None = Field(default=None, description="Additional location, e.g. flat 2/1")
    nam: str | None = Field(default=None, description="Building or site name")
    pc: str | None = Field(default=None, description="Postcode")

    def one_line(self) -> str:
        parts = [self.loc, self.nam, " ".join(p for p in (self.hno, self.a6) if p), self.a3, self.pc]
        return ", ".join(p for p in parts if p)


class Location(CleanModel):
    model_config = ConfigDict(extra="forbid")

    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    accuracy_m: float | None = Field(default=None, ge=0, description="Radius of the 95% circle, metres")
    altitude_m: float | None = None
    source: LocationSource = "gnss"
    fix_time: datetime | None = None
    last_known: bool = False
    age_s: float | None = Field(default=None, description="Age of the fix when the alert was received")
    civic: CivicAddress | None = None
    grid_ref: str | None = Field(default=None, description="British National Grid reference (EPSG:27700)")
    speed_mps: float | None = None
    heading_deg: float | None = None
    authenticated: bool = Field(
        default=True,
        description="False: reported over a transport that does not authenticate the device (auth none), so "
        "anyone who knows its identifier could have sent it; do not rely on it alone",
    )

    @field_validator("fix_time")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v

    @property
    def has_coordinates(self) -> bool:
        return self.lat is not None and self.lon is not None


_LINE_BREAKS = re.compile(r"[\r\n\u0085\u2028\u2029]+")


def one_line(value: str | None) -> str | None:
    """A name or label that ends up in an e-mail header or a subject: line breaks become one space, so a
    CR/LF in a person's name can never fail (or inject into) every e-mail about them. Pure."""
    return None if value is None else _LINE_BREAKS.sub(" ", value).strip()


class PersonDetails(CleanModel):
    """The person as the police contact carries them (`Contact.person`): never their emergency contacts."""

    model_config = ConfigDict(extra="forbid", title="Person")

    name: str | None = None
    phone: str | None = None
    language: str | None = Field(default=None, description="BCP 47 tag, e.g. en-GB, gd, pl")
    communication_needs: list[str] = Field(default_factory=list, description='e.g. "deaf: text only"')
    vulnerability_notes: str | None = None

    @field_validator("name", "phone")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        return one_line(v)


class EmergencyContact(CleanModel):
    """Someone the person asked to be told about their alerts: family, a carer, a neighbour
    (docs/operations/emergency-contacts.md). Told by e-mail, SMS or webhook, whichever is given and
    configured; never about a silent or duress alert unless `notify_silent` (see the warning there)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    relation: str | None = Field(default=None, max_length=60, description="e.g. daughter, carer, neighbour")
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9 ()-]{3,30}$", description="For SMS")
    email: str | None = Field(default=None, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$", max_length=254)
    webhook_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+", description="POSTed JSON")
    language: str | None = Field(default=None, description="BCP 47 tag; messages in en or de, else English")
    kinds: list[AlertKind] = Field(
        default_factory=list, description="Alert kinds to be told about; empty: the life-safety kinds"
    )
    notify_silent: bool = Field(
        default=False,
        description="Also told about silent and duress alerts. Only with the person's informed consent: "
        "whoever threatens them may be registered as a contact",
    )
    share_location: bool = Field(default=True, description="Messages carry the grid reference and a map link")

    @field_validator("name", "relation")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        return one_line(v)

    def wants(self, kind: AlertKind) -> bool:
        return kind in (self.kinds or LIFE_SAFETY_KINDS)


class Person(PersonDetails):
    """The registry's record of the person: what the police see, plus their own emergency contacts."""

    emergency_contacts: list[EmergencyContact] = Field(
        default_factory=list, max_length=10, description="Told about alerts; never in the police contact"
    )
    time_zone: str | None = Field(
        default=None, max_length=64,
        description="IANA time zone (e.g. Europe/Berlin) of the times in texts to the emergency contacts; "
        "Europe/London when unset",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class Device(CleanModel):
    """A registered device. The registry is the source of person data and the registered address."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    tenant_id: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    profile_id: str | None = None
    label: str | None = None
    person: Person | None = None
    registered_address: Location | None = None
    identifiers: dict[str, str] = Field(
        default_factory=dict, description="Transport identities: msisdn, deveui, z2m, alexa_device, ..."
    )
    status: ContactStatus = Field(default="actual", description="exercise for simulated or training devices")
    check_in_interval_s: int | None = None
    sms_replies: bool = Field(
        default=False, description="Text the alert's state back to identifiers.msisdn (GSM trackers; never silent)"
    )
    audible_on_silent: bool = Field(
        default=False,
        description="A platform message may be spoken or texted (audible: true) even on a silent or duress "
        "alert; off by default: whoever threatens the person may hear it",
    )
    gateway_id: str | None = None
    last_location: Location | None = None
    last_seen: datetime | None = None


ObservationAction = Literal["alert", "cancel", "location", "restore", "heartbeat", "message"]


class Observation(CleanModel):
    """What an adapter saw, after authentication and decoding; the input to `Pipeline.submit`."""

    model_config = ConfigDict(extra="forbid")

    device_id: str
    transport: str
    action: ObservationAction = "alert"
    kind: AlertKind | None = None
    message_id: str | None = Field(default=None, description="Transport message id, used for dedupe")
    also_message_ids: list[str] = Field(
        default_factory=list, description="Message ids of further identical presses folded into this one"
    )
    presses: int = Field(default=1, ge=1, description="How many presses this observation stands for")
    alert_id: str | None = Field(default=None, description="Target alert for cancel/location updates")
    occurred_at: datetime | None = None
    location: Location | None = None
    silent: bool = False
    severity: Severity | None = None
    language: str | None = None
    status: ContactStatus | None = None
    verified: bool = True
    attributes: dict[str, Any] = Field(default_factory=dict)
    raw: str | None = Field(default=None, description="Raw frame for audit (text, or hex for binary)")
    reason: str | None = None
    text: str | None = Field(default=None, description="action message: the person's text for the platform")
    auth: DeviceAuth = Field(default="none", description="How the transport authenticated the device")

    @model_validator(mode="after")
    def _mark_location(self) -> Observation:
        """A location from an unauthenticated transport is marked so, wherever it ends up."""
        if self.auth == "none" and self.location is not None and self.location.authenticated:
            object.__setattr__(self, "location", self.location.model_copy(update={"authenticated": False}))
        return self

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v


class HistoryEntry(CleanModel):
    at: datetime
    event: str
    state: AlertState
    detail: dict[str, Any] = Field(default_factory=dict)


class Alert(BaseModel):
    alert_id: str
    tenant_id: str
    device_id: str
    kind: AlertKind
    severity: Severity
    silent: bool
    status: ContactStatus
    state: AlertState
    occurred_at: datetime
    received_at: datetime
    updated_at: datetime
    transport: str
    auth: DeviceAuth | None = None  # of the observation that raised it (None: stored before it was recorded)
    location: Location | None = None
    language: str | None = None
    verified: bool = True
    escalation_count: int = 0
    contact_seq: int = 0
    version: int = Field(default=0, description="Bumped on every write; guards concurrent updates")
    dedupe_key: str | None = None
    routes: list[str] = Field(default_factory=list, description="Platform routes its contacts went to")
    attributes: dict[str, Any] = Field(default_factory=dict)
    raw: str | None = None

    @property
    def is_open(self) -> bool:
        return self.state not in FINAL_STATES

    @property
    def critical(self) -> bool:
        return self.kind in LIFE_SAFETY_KINDS or self.severity.rank >= Severity.severe.rank


PLAIN_DC09_WARNING = (
    "this device has a SIA DC-09 account without an AES key: anyone who can reach the DC-09 port and knows the "
    "account number can raise or cancel its alerts; give it a key (sosbridge devices dc09-key) or limit plain "
    "accounts to the panels' networks (SOSBRIDGE_DC09_PLAIN_ALLOW)"
)


def registration_warnings(device: Device) -> list[str]:
    """What to tell whoever registers `device` (a new device has no transport keys yet). Pure."""
    return [PLAIN_DC09_WARNING] if device.identifiers.get("dc09") else []


def device_kind(kind: AlertKind) -> str:
    """The alert's kind as documents the device (and so anyone near the person) can read name it: a duress
    alert reads as an ordinary `sos` (docs/voice/duress.md); the platform always gets the real kind. Pure."""
    return AlertKind.sos.value if kind is AlertKind.duress else kind.value
