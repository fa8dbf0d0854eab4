"""Device profiles: a device type is data (one YAML file per hardware model in hardware/profiles/).

A profile names its decoder, declares the kinds the device may emit (enforced by the pipeline), maps
vendor fields to kinds, says where the location is, and carries samples (raw frame → expected result)
that run as tests and through `sosbridge profiles check FILE`. Extra directories override built-ins with
the same id, as zigbee2mqtt's external converters do.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bridge.core.model import AlertKind, Location, LocationSource, ObservationAction, Severity
from bridge.devices.frames import DECODE_WARNINGS, Decoded, DecodedAction, DecodeError, Frame, UndeclaredKind
from bridge.devices.transports import installed_transports, transport_problem

log = logging.getLogger("sosbridge.profiles")

# Package data of `hardware` (in the repo: hardware/profiles/), so an installed wheel has every built-in.
BUILTIN_PROFILE_DIR = Path(str(files("hardware").joinpath("profiles")))

_MISSING = object()
LOCATION_SOURCES = frozenset(get_args(LocationSource))


def get_path(doc: Any, path: str) -> Any:
    """Dotted path lookup ('object.location.lat', 'rxInfo.0.rssi'); returns _MISSING when absent."""
    if type(doc) is dict and "." not in path:
        return doc.get(path, _MISSING)  # a top-level field: most of a frame's lookups (issue 27)
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit():
            idx = int(part)
            if not -len(cur) <= idx < len(cur):
                return _MISSING
            cur = cur[idx]
        else:
            return _MISSING
    return cur


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: str
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    exists: bool | None = None
    matches: str | None = Field(default=None, description="Regular expression, searched in str(value)")

    def holds(self, doc: Any, meta: dict[str, str]) -> bool:
        value = meta.get(self.field[5:], _MISSING) if self.field.startswith("meta.") else get_path(doc, self.field)
        if self.exists is not None:
            return (value is not _MISSING) == self.exists
        if value is _MISSING:
            # A missing field only satisfies "in: [null]" style rules.
            return self.in_ is not None and None in self.in_
        if self.in_ is not None:
            return value in self.in_
        if self.matches is not None:
            return re.search(self.matches, str(value)) is not None
        return bool(value == self.equals)


class KindMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: list[Condition]
    action: ObservationAction = "alert"
    kind: AlertKind | None = None
    kind_from: str | None = Field(default=None, description="Take the kind from this field's value")
    silent: bool = False
    silent_from: str | None = Field(default=None, description="Take the silent flag from this field")
    reason: str | None = None
    trigger: Literal["event", "state"] = Field(
        default="event",
        description="event: every matching frame is a press. state: the condition is a level that stays true "
        "(an IAS zone bit); it raises one alert on its rising edge and a restore on its falling edge",
    )

    def condition_fields(self) -> list[str]:
        return [c.field for c in self.when if not c.field.startswith("meta.")]

    def state_key(self) -> str:
        return ",".join(self.condition_fields()) + f"->{self.kind.value if self.kind else self.kind_from}"

    @model_validator(mode="after")
    def _kind_for_alerts(self) -> KindMapping:
        if self.action == "alert" and self.kind is None and self.kind_from is None:
            raise ValueError("a mapping with action 'alert' needs a kind or kind_from")
        return self

    def resolve_kind(self, doc: Any, declared: set[AlertKind]) -> AlertKind | None:
        if self.kind_from is None:
            return self.kind
        value = get_path(doc, self.kind_from)
        try:
            kind = AlertKind(str(value))
        except ValueError:
            return None
        return kind if kind in declared else None


class LocationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: str
    lon: str
    accuracy: str | None = None
    accuracy_scale: float = Field(default=1.0, description="Multiplier to a 95% radius in metres")
    default_accuracy_m: float | None = None
    altitude: str | None = None
    fix_time: str | None = None
    source: LocationSource = "gnss"
    source_from: str | None = Field(default=None, description="Take the source from this field when present")
    valid_if: list[Condition] = Field(default_factory=list)


TimeFormat = Literal["iso", "epoch_s", "epoch_ms"]


class SampleExpectation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: DecodedAction = "alert"
    kind: AlertKind | None = None
    silent: bool | None = None
    state_on: bool | None = None
    lat: float | None = None
    lon: float | None = None
    accuracy_m: float | None = None
    device_ref: str | None = None
    message_id: str | None = None


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    source: str = Field(description="Where this frame comes from (file and upstream origin)")
    meta: dict[str, str] = Field(default_factory=dict)
    payload: Any = None
    payload_text: str | None = None
    payload_hex: str | None = None
    payload_b64: str | None = None
    retained: bool = False
    expect: list[SampleExpectation] = Field(default_factory=list)
    expect_error: bool = False

    def frame(self) -> Frame:
        if self.payload_hex is not None:
            raw = bytes.fromhex(self.payload_hex.replace(" ", ""))
        elif self.payload_b64 is not None:
            raw = base64.b64decode(self.payload_b64)
        elif self.payload_text is not None:
            raw = self.payload_text.encode()
        else:
            raw = json.dumps(self.payload).encode()
        return Frame(payload=raw, meta=self.meta, retained=self.retained)


# Transport names and acknowledgement styles are registered by the installed adapters, not listed here:
# bridge/devices/transports.py checks a profile against them when it is loaded.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,40}$"


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,80}$")
    vendor: str
    model: str
    description: str | None = None
    white_labels: list[str] = Field(default_factory=list)
    transport: str = Field(pattern=NAME_PATTERN, description="A transport an installed adapter carries")
    decoder: str = "json"
    match: dict[str, str] = Field(
        default_factory=dict,
        description="The frames this profile speaks for: each key is checked against the frame's metadata "
        "(topic: an MQTT filter with + and #, alternatives separated by ' | '; a whole level {scheme} matches "
        "like + and binds that level to the device's identifier of that scheme, and the MQTT adapter "
        "subscribes to it; other keys: exact or '*' globs). A device bound to this profile whose frame does "
        "not match is refused (wrong_topic).",
    )
    fallback: bool = Field(
        default=False,
        description="Decode frames from registered devices that name no profile, when `match` matches",
    )
    kinds: list[AlertKind] = Field(min_length=1, description="The kinds this device may emit")
    mappings: list[KindMapping] = Field(default_factory=list)
    ignore: list[list[Condition]] = Field(default_factory=list, description="Frames that are not events")
    location: LocationSpec | None = None
    location_updates: bool = Field(default=False, description="Unmapped frames with a fix are location updates")
    dedupe_field: str | None = None
    severity_field: str | None = None
    language_field: str | None = None
    device_ref_field: str | None = None
    time_field: str | None = None
    time_format: TimeFormat = "iso"
    attributes: list[str] = Field(default_factory=list, description="Fields copied into the alert attributes")
    debounce_s: float = 0.0
    ack: str = Field(
        default="none",
        pattern=NAME_PATTERN,
        description="How the transport answers a stored or refused frame: http_status, mqtt_puback (PUBACK "
        "only), mqtt_status (PUBACK + status/error topics), coap_response, serial_ack (ACK/NAK on the wire), "
        "speech (a spoken reply), sms, watch_reply (the watch protocol's own answer, e.g. [3G*ID*0002*AL]), "
        "dc09_ack (SIA DC-09 ACK/NAK/DUH), or none (the transport acknowledges at its own level only)",
    )
    check_in_interval_s: int | None = None
    max_fix_age_s: float = Field(
        default=3600.0, gt=0,
        description="A fix (or an event time) further than this from the frame's arrival is not current: the "
        "fix is sent as last known with its age and the event's time is when the bridge received it "
        "(docs/devices/fix-age.md)",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Decoder-specific settings")
    samples: list[Sample] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _fix_age_from_options(cls, data: Any) -> Any:
        """Profiles written before `max_fix_age_s` was a profile field had it under `options`."""
        if isinstance(data, dict) and isinstance(data.get("options"), dict) and "max_fix_age_s" in data["options"]:
            options = dict(data["options"])
            data = {**data, "options": options}
            data.setdefault("max_fix_age_s", options.pop("max_fix_age_s"))
        return data

    @model_validator(mode="after")
    def _topic_templates(self) -> DeviceProfile:
        for pattern in topic_patterns(self):
            for part in pattern.split("/"):
                if ("{" in part or "}" in part) and not TOPIC_TEMPLATE.match(part):
                    raise ValueError(f"match.topic {pattern!r}: {part!r} is not a whole-level {{scheme}} "
                                     "(lower-case letters, digits, _)")
                if part in ("#", "+") or TOPIC_TEMPLATE.match(part):
                    continue
                if "#" in part or "+" in part:
                    raise ValueError(f"match.topic {pattern!r}: a wildcard must be a whole level")
        return self

    @model_validator(mode="after")
    def _mappings_declared(self) -> DeviceProfile:
        declared = set(self.kinds)
        for m in self.mappings:
            if m.kind is not None and m.kind not in declared:
                raise ValueError(f"mapping emits {m.kind.value!r}, which the profile does not declare in kinds")
        return self


# -- the generic mapping engine (pure) -------------------------------------------------------------------
def _parse_time(value: Any, fmt: TimeFormat) -> datetime | None:
    try:
        if fmt == "epoch_s":
            return datetime.fromtimestamp(float(value), UTC)
        if fmt == "epoch_ms":
            return datetime.fromtimestamp(float(value) / 1000, UTC)
        text = str(value).replace("Z", "+00:00")
        dt = datetime.fromisoformat(text)
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is _MISSING or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def location_damaged(doc: Any, spec: LocationSpec) -> bool:
    """The frame carries a latitude or longitude, but not a usable pair (text, out of range, half of it):
    a descriptive part dropped, which `decode_warnings` names. An absent pair is no fix, not damage."""
    raw_lat, raw_lon = get_path(doc, spec.lat), get_path(doc, spec.lon)
    if raw_lat in (_MISSING, None, "") and raw_lon in (_MISSING, None, ""):
        return False
    lat, lon = _number(raw_lat), _number(raw_lon)
    return lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180)


def extract_location(doc: Any, spec: LocationSpec, meta: dict[str, str] | None = None) -> Location | None:
    meta = meta or {}
    if spec.valid_if and not all(c.holds(doc, meta) for c in spec.valid_if):
        return None
    lat, lon = _number(get_path(doc, spec.lat)), _number(get_path(doc, spec.lon))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    if lat == 0 and lon == 0:  # "null island": trackers report 0,0 when they have no fix
        return None
    acc = _number(get_path(doc, spec.accuracy)) if spec.accuracy else None
    accuracy_m = acc * spec.accuracy_scale if acc is not None and acc >= 0 else spec.default_accuracy_m
    alt = _number(get_path(doc, spec.altitude)) if spec.altitude else None
    fix_raw = get_path(doc, spec.fix_time) if spec.fix_time else _MISSING
    fix_time = None
    if fix_raw is not _MISSING:
        fix_time = _parse_time(fix_raw, "epoch_s" if isinstance(fix_raw, int | float) else "iso")
    source = spec.source
    if spec.source_from and (named := get_path(doc, spec.source_from)) is not _MISSING and named in LOCATION_SOURCES:
        source = named
    return Location(lat=lat, lon=lon, accuracy_m=accuracy_m, altitude_m=alt, source=source, fix_time=fix_time)


def _optional_str(doc: Any, path: str | None) -> str | None:
    if not path:
        return None
    value = get_path(doc, path)
    return None if value is _MISSING or value is None else str(value)


def apply_profile(doc: dict[str, Any], profile: DeviceProfile, meta: dict[str, str] | None = None) -> list[Decoded]:
    """Map a decoded document to events using the profile's rules.

    Returns [] for a frame the profile deliberately ignores, and one `unmatched` event for a frame no rule
    covers (the ingress makes that visible). A `state` mapping reports its level both ways (state_on).
    """
    meta = meta or {}
    if any(all(c.holds(doc, meta) for c in rule) for rule in profile.ignore):
        return []
    # What makes the frame an alarm (the mappings' conditions) must parse; what describes it (location,
    # time, severity) is dropped when it does not, and named in `decode_warnings` (docs/devices/partial-frames.md).
    warnings = [str(w) for w in doc.get("decode_warnings") or ()] if isinstance(doc, dict) else []
    location = extract_location(doc, profile.location, meta) if profile.location else None
    if location is None and profile.location is not None and location_damaged(doc, profile.location):
        warnings.append("location")
    message_id = _optional_str(doc, profile.dedupe_field)
    occurred_at = None
    if profile.time_field:
        raw_time = get_path(doc, profile.time_field)
        occurred_at = None if raw_time is _MISSING else _parse_time(raw_time, profile.time_format)
        if occurred_at is None and raw_time not in (_MISSING, None, ""):
            warnings.append("time")
    device_ref = _optional_str(doc, profile.device_ref_field)
    severity = None
    if (raw_severity := _optional_str(doc, profile.severity_field)) is not None:
        try:
            severity = Severity(raw_severity)
        except ValueError:
            warnings.append("severity")  # the profile's default severity for the kind applies
    language = _optional_str(doc, profile.language_field)
    attributes = {path: value for path in profile.attributes if (value := get_path(doc, path)) is not _MISSING}
    if warnings:
        attributes[DECODE_WARNINGS] = sorted(set(warnings))
    declared = set(profile.kinds)
    events: list[Decoded] = []
    seen: set[tuple[str, str | None]] = set()
    for mapping in profile.mappings:
        holds = all(c.holds(doc, meta) for c in mapping.when)
        if not holds:
            fields = mapping.condition_fields()
            if mapping.trigger == "state" and fields and all(get_path(doc, f) is not _MISSING for f in fields):
                # The level is known and low: a falling edge if it was high (the ingress decides).
                events.append(Decoded(action="restore", kind=mapping.kind, location=location, attributes=attributes,
                                      device_ref=device_ref, state_key=mapping.state_key(), state_on=False,
                                      reason=f"{mapping.kind.value if mapping.kind else 'state'} cleared"))
            continue
        kind = mapping.resolve_kind(doc, declared)
        if mapping.action == "alert" and kind is None:
            asked = get_path(doc, mapping.kind_from or "")
            known = sorted(k.value for k in AlertKind)
            if str(asked) not in known:
                raise DecodeError(f"kind {asked!r} is not an alert kind (one of {known})")
            raise UndeclaredKind(f"kind {asked!r} is not one this device may send")
        key = (mapping.action, kind.value if kind else None)
        if key in seen:
            continue
        seen.add(key)
        events.append(
            Decoded(
                action=mapping.action,
                kind=kind,
                location=location,
                message_id=message_id if len(seen) == 1 else (f"{message_id}:{key[1]}" if message_id else None),
                occurred_at=occurred_at,
                silent=mapping.silent
                or (
                    bool(get_path(doc, mapping.silent_from)) is True
                    if mapping.silent_from and get_path(doc, mapping.silent_from) is not _MISSING
                    else False
                ),
                attributes=attributes,
                device_ref=device_ref,
                reason=mapping.reason,
                severity=severity,
                language=language,
                state_key=mapping.state_key() if mapping.trigger == "state" else None,
                state_on=True if mapping.trigger == "state" else None,
            )
        )
    if not seen and location is not None and profile.location_updates:
        events.append(
            Decoded(
                action="location",
                location=location,
                message_id=message_id,
                occurred_at=occurred_at,
                attributes=attributes,
                device_ref=device_ref,
            )
        )
    if not events:
        events.append(Decoded(action="unmatched", device_ref=device_ref, message_id=message_id))
    return events


def matches_frame(profile: DeviceProfile, meta: dict[str, str]) -> bool:
    """Does the profile's `match` cover this frame's metadata? Pure."""
    for key, pattern in profile.match.items():
        value = meta.get(key)
        if value is None:
            return False
        alternatives = [p.strip() for p in pattern.split(" | ")]
        if key == "topic":
            if not any(topic_matches(p, value) for p in alternatives):
                return False
        elif not any(fnmatch.fnmatchcase(value, p) for p in alternatives):
            return False
    return True


# A whole topic level `{scheme}`: matches one level, like `+`, and binds it to the device's identifier of
# that scheme (`shellies/{shelly}/input_event/0`; docs/devices/index.md).
TOPIC_TEMPLATE = re.compile(r"^\{([a-z][a-z0-9_]{0,39})\}$")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter semantics (+ one level, # the rest); a `{scheme}` level matches like `+`."""
    return topic_bindings(topic_filter, topic) is not None


def topic_bindings(pattern: str, topic: str) -> dict[str, str] | None:
    """The `{scheme}` levels of `pattern` bound to `topic`'s levels ({} when it binds none), or None when the
    topic does not match. Pure."""
    f_parts, t_parts = pattern.split("/"), topic.split("/")
    bound: dict[str, str] = {}
    for i, part in enumerate(f_parts):
        if part == "#":
            return bound
        if i >= len(t_parts):
            return None
        if (m := TOPIC_TEMPLATE.match(part)) is not None:
            if not t_parts[i] or bound.setdefault(m[1], t_parts[i]) != t_parts[i]:
                return None
        elif part != "+" and part != t_parts[i]:
            return None
    return bound if len(f_parts) == len(t_parts) else None


def topic_filter(pattern: str) -> str:
    """The MQTT subscription filter of a topic pattern: each `{scheme}` level becomes `+`."""
    return "/".join("+" if TOPIC_TEMPLATE.match(part) else part for part in pattern.split("/"))


def topic_patterns(profile: DeviceProfile) -> list[str]:
    """The alternatives of the profile's `match.topic` (none when it names no topic)."""
    return [p.strip() for p in profile.match["topic"].split(" | ")] if "topic" in profile.match else []


def topic_schemes(pattern: str) -> list[str]:
    """The identifier schemes a topic pattern binds, in order."""
    return [m[1] for part in pattern.split("/") if (m := TOPIC_TEMPLATE.match(part)) is not None]


# -- loading --------------------------------------------------------------------------------------------
class ProfileError(ValueError):
    def one_line(self) -> str:
        """The error on one line (pydantic's are several), for a start-up refusal."""
        return " ".join(str(self).split())[:400]


def load_profile_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping at the top level")
    if "version" not in data:
        raise ProfileError(f"{path}: 'version' is required")
    try:
        profile = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{path}: {exc}") from exc
    if (problem := transport_problem(profile.transport, profile.ack, installed_transports())) is not None:
        raise ProfileError(f"{path}: {problem}")
    return profile


def _profile_files(directory: Path) -> Iterable[Path]:
    if directory.is_dir():
        yield from sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml"))


def plugin_profile_dirs() -> list[Path]:
    """Directories named by installed plug-ins through the `sosbridge.profiles` entry point group."""
    from bridge.infra.plugins import load_group

    dirs: list[Path] = []
    for plugin in load_group("sosbridge.profiles"):
        try:
            dirs.append(Path(plugin.obj() if callable(plugin.obj) else plugin.obj))
        except Exception as exc:  # a broken plug-in must not take the built-in profiles down with it
            log.error("plugin profile directory failed", extra={"plugin": plugin.name, "error": repr(exc)})
    return dirs


class ProfileRegistry:
    """Built-in profiles, overridden by same-id profiles from extra directories (later wins)."""

    def __init__(self, profiles: dict[str, DeviceProfile], origins: dict[str, Path]) -> None:
        self.profiles = profiles
        self.origins = origins
        self._kinds: dict[str, tuple[DeviceProfile, frozenset[AlertKind]]] = {}  # per alert: no new set

    @classmethod
    def load(cls, extra_dirs: Iterable[str | Path] = (), builtin_dir: Path = BUILTIN_PROFILE_DIR,
             strict: bool = False) -> ProfileRegistry:
        """Built-ins, then plug-in packages' profiles (`sosbridge.profiles`), then configured directories.
        `strict`: a file that does not load raises ProfileError (`serve` refuses to start on it)."""
        profiles: dict[str, DeviceProfile] = {}
        origins: dict[str, Path] = {}
        for directory in [builtin_dir, *plugin_profile_dirs(), *map(Path, extra_dirs)]:
            for path in _profile_files(directory):
                try:
                    profile = load_profile_file(path)
                except ProfileError as exc:
                    if strict:
                        raise
                    log.error("invalid profile skipped", extra={"path": str(path), "error": str(exc)[:500]})
                    continue
                profiles[profile.id] = profile
                origins[profile.id] = path
        return cls(profiles, origins)

    def get(self, profile_id: str | None) -> DeviceProfile | None:
        return self.profiles.get(profile_id) if profile_id else None

    def fallback_for(self, transport: str, meta: dict[str, str]) -> DeviceProfile | None:
        """The profile for a registered device that names none: a `fallback` profile matching the frame."""
        for profile in self.profiles.values():
            if profile.fallback and profile.transport == transport and matches_frame(profile, meta):
                return profile
        return None

    def by_decoder(self, decoder: str) -> list[DeviceProfile]:
        return [p for p in self.profiles.values() if p.decoder == decoder]

    def allowed_kinds(self, device: Any) -> frozenset[AlertKind] | None:
        profile = self.get(getattr(device, "profile_id", None))
        if profile is None:
            return None
        cached = self._kinds.get(profile.id)
        if cached is None or cached[0] is not profile:
            cached = self._kinds[profile.id] = (profile, frozenset(profile.kinds))
        return cached[1]
