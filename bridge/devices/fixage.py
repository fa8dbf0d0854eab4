"""One rule for the age of a fix and the time of an event, for every decoder (pure).

A GPS whose clock says 1994, a watch that never set its clock, a phone replaying fixes from 2017, a tracker
repeating its last fix from hours ago: the position may be right, but it is not where the person is now.
`judge(events, now, max_fix_age_s)` is applied by the ingress to every decoder's output and to every
observation a transport hands in ready-made (an HTTP location update), and by decoders that know a better
reference time first; applying it twice changes nothing:

- a fix whose `fix_time` is more than `max_fix_age_s` before `now`, or more than `CLOCK_SKEW_S` after it,
  becomes `last_known` with its age (`age_s`; unknown for a fix "from the future") and the attribute
  `fix_stale`; it is never sent as live;
- the event's own time (`occurred_at`) is kept only when it is plausible by the same window; otherwise it is
  dropped (the alert's time is when the bridge received it) and the reported value kept as the attribute
  `device_time`.

`replaces_last_location(current, incoming)` says whether a fix may become the device's last location: a
stale fix never replaces a fresher one. See docs/devices/fix-age.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from bridge.core.model import Location, Observation
from bridge.devices.frames import Decoded

# A decoder's events, or an observation a transport built itself (an HTTP location update): same fields.
Event = TypeVar("Event", Decoded, Observation)

DEFAULT_MAX_FIX_AGE_S = 3600.0
CLOCK_SKEW_S = 60.0
FIX_STALE = "fix_stale"
DEVICE_TIME = "device_time"


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time with its zone (a transport's `received_at`), or None."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def reference_time(meta: Mapping[str, str], default: datetime | None = None) -> datetime:
    """When the frame arrived: the transport's `meta.received_at`, else `default`, else now."""
    return parse_time(meta.get("received_at")) or default or datetime.now(UTC)


def implausible(when: datetime, now: datetime, max_age_s: float, skew_s: float = CLOCK_SKEW_S) -> bool:
    """Older than `max_age_s`, or ahead of `now` by more than the clock skew (a time without a zone is UTC)."""
    age = (now - (when if when.tzinfo is not None else when.replace(tzinfo=UTC))).total_seconds()
    return age > max_age_s or age < -skew_s


def judge(events: list[Event], now: datetime | None, max_age_s: float = DEFAULT_MAX_FIX_AGE_S,
          skew_s: float = CLOCK_SKEW_S) -> list[Event]:
    """Each event with a stale fix marked last known (with its age), and an implausible event time dropped."""
    if now is None:
        return events
    return [_judge_one(event, now, max_age_s, skew_s) for event in events]


def _judge_one(event: Event, now: datetime, max_age_s: float, skew_s: float) -> Event:
    update: dict[str, Any] = {}
    attributes = dict(event.attributes)
    loc = event.location
    if loc is not None and loc.fix_time is not None and not loc.last_known and \
            implausible(loc.fix_time, now, max_age_s, skew_s):
        seconds = (now - loc.fix_time).total_seconds()  # Location keeps fix_time zoned (UTC when it had none)
        update["location"] = loc.model_copy(update={"last_known": True, "age_s": seconds if seconds >= 0 else None})
        attributes[FIX_STALE] = True
    if event.occurred_at is not None and implausible(event.occurred_at, now, max_age_s, skew_s):
        update["occurred_at"] = None
        attributes[DEVICE_TIME] = event.occurred_at.isoformat()
    if not update:
        return event
    update["attributes"] = attributes
    return event.model_copy(update=update)


def max_fix_age(profile: Any) -> float:
    """The profile's `max_fix_age_s` (a profile without one: the default)."""
    value = getattr(profile, "max_fix_age_s", None)
    return float(value) if value is not None else DEFAULT_MAX_FIX_AGE_S


def replaces_last_location(current: Location | None, incoming: Location | None) -> bool:
    """Whether `incoming` may become the device's last location. Pure. A fix without coordinates never
    does; a fix older than the current one (by fix time) never does; a stale (last-known) fix replaces
    only a location that is no fresher than it (or none)."""
    if incoming is None or not incoming.has_coordinates:
        return False
    if current is None or not current.has_coordinates:
        return True
    if incoming.last_known and incoming.age_s is None:
        return False  # a fix "from the future": its time cannot be compared
    if incoming.fix_time is not None and current.fix_time is not None:
        return incoming.fix_time >= current.fix_time
    return not incoming.last_known
