"""A fix far from the time its frame arrived is not a current fix (pure).

A GPS whose clock says 1994 (a receiver before its first almanac, or one hit by the GPS week rollover),
a watch that never set its clock, a tracker repeating its last fix from hours ago: the position may be
right, but it is not where the person is now. Such a fix is flagged `last_known` with its age (and the
attribute `fix_stale`), and the frame's own time is not used as the event's time. Decoders call this with
the time the transport received the frame (`meta.received_at`) or a trusted network time (an SMS's SCTS).
"""

from __future__ import annotations

from datetime import datetime

from bridge.devices.decoding import Decoded

DEFAULT_MAX_FIX_AGE_S = 3600.0


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def flag_stale(events: list[Decoded], now: datetime | None, max_age_s: float = DEFAULT_MAX_FIX_AGE_S) -> list[Decoded]:
    if now is None:
        return events
    out = []
    for event in events:
        loc = event.location
        if loc is not None and loc.fix_time is not None and abs((now - loc.fix_time).total_seconds()) > max_age_s:
            seconds = (now - loc.fix_time).total_seconds()
            age = seconds if seconds >= 0 else None  # a fix "from the future": its age is unknown
            event = event.model_copy(update={
                "location": loc.model_copy(update={"last_known": True, "age_s": age}),
                "occurred_at": None,
                "attributes": {**event.attributes, "fix_stale": True},
            })
        out.append(event)
    return out
