"""NMEA 0183 position sentences (GGA, RMC, any talker) from a serial-attached GPS, via pynmea2.

Only a valid fix becomes a location: RMC or GLL status A (GLL's mode indicator not N), or GGA fix quality
> 0. A fix far from the time the line arrived (`meta.received_at`; more than the profile's
`max_fix_age_s`, default 3600 s), e.g. from a GPS whose clock says 1994, is flagged last known with its
age (bridge/devices/fixage.py), never presented as current. The 95% radius comes from
HDOP: accuracy_m = HDOP x UERE x 2 (UERE, the user equivalent range error, is a profile option, 5 m by
default; x2 turns a 1-sigma radius into roughly 95%), never below `min_accuracy_m`. RMC carries no HDOP,
so it gets the profile's `default_accuracy_m`.

Some cheap modules print decimal degrees instead of ddmm.mmmm (pynmea2 test_utils.py has one); the
`coordinates` option is `auto` (decide from the digits before the point), `ddmm` or `decimal`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from bridge.core.model import Location
from bridge.devices.decoding import ChecksumError, Decoded, DecodeError, Frame
from bridge.devices.fixage import judge, max_fix_age, parse_time
from bridge.devices.profiles import DeviceProfile

if TYPE_CHECKING:
    import pynmea2


def _coordinate(raw: str, hemi: str, is_lat: bool, mode: str) -> float | None:
    if not raw or hemi not in ("N", "S", "E", "W"):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    int_digits = len(raw.split(".")[0].lstrip("-"))
    decimal = mode == "decimal" or (mode == "auto" and int_digits < (4 if is_lat else 5))
    if not decimal:
        degrees = int(value // 100)
        value = degrees + (value - degrees * 100) / 60
    if hemi in ("S", "W"):
        value = -value
    limit = 90 if is_lat else 180
    return value if -limit <= value <= limit else None


def parse_sentence(text: str, allow_missing_checksum: bool = True) -> pynmea2.NMEASentence:
    import pynmea2  # with the first sentence (137 ms to import): most bridges have no serial GPS

    text = text.strip()
    has_checksum = len(text) > 3 and text[-3] == "*"
    if not has_checksum and not allow_missing_checksum:
        raise ChecksumError("NMEA sentence without a checksum")
    try:
        return pynmea2.parse(text, check=has_checksum)
    except pynmea2.ChecksumError:
        raise ChecksumError("NMEA checksum does not verify") from None
    except pynmea2.ParseError as exc:
        raise DecodeError(f"not an NMEA sentence: {str(exc)[:80]}") from None


def _option(profile: DeviceProfile, name: str, default: Any) -> Any:
    return profile.options.get(name, default)


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    try:
        return _decode(frame, profile)
    except DecodeError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        # pynmea2 converts fields lazily, on attribute access: a garbled field surfaces here, not in parse().
        raise DecodeError(f"malformed NMEA field: {str(exc)[:80]}") from None


def _decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    try:
        text = frame.payload.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("NMEA sentences are ASCII") from None
    msg = parse_sentence(text, bool(_option(profile, "allow_missing_checksum", True)))
    mode = str(_option(profile, "coordinates", "auto"))
    sentence = getattr(msg, "sentence_type", "")
    attributes: dict[str, Any] = {"nmea": sentence}
    fix_time: datetime | None = None
    if sentence == "RMC":
        if msg.status != "A":
            return []
        lat = _coordinate(msg.lat, msg.lat_dir, True, mode)
        lon = _coordinate(msg.lon, msg.lon_dir, False, mode)
        accuracy = float(_option(profile, "default_accuracy_m", 30.0))
        if isinstance(msg.timestamp, time) and isinstance(msg.datestamp, date):
            fix_time = datetime.combine(msg.datestamp, msg.timestamp.replace(tzinfo=None), UTC)
        speed_mps = float(msg.spd_over_grnd) * 0.514444 if msg.spd_over_grnd not in (None, "") else None
        heading = float(msg.true_course) if msg.true_course not in (None, "") else None
        altitude = None
    elif sentence == "GGA":
        try:
            quality = int(msg.gps_qual or 0)
        except ValueError:
            quality = 0
        if quality <= 0:
            return []
        lat = _coordinate(msg.lat, msg.lat_dir, True, mode)
        lon = _coordinate(msg.lon, msg.lon_dir, False, mode)
        try:
            hdop = float(msg.horizontal_dil)
        except (TypeError, ValueError):
            hdop = None
        if hdop is not None:
            attributes["hdop"] = hdop
            accuracy = hdop * float(_option(profile, "uere_m", 5.0)) * 2.0
            accuracy = max(accuracy, float(_option(profile, "min_accuracy_m", 5.0)))
        else:
            accuracy = float(_option(profile, "default_accuracy_m", 30.0))
        attributes["satellites"] = int(msg.num_sats) if str(msg.num_sats or "").isdigit() else None
        # GGA has no date: the adapter passes the date of the last RMC (or today's UTC date) in meta.
        utc_date = frame.meta.get("utc_date")
        if utc_date and isinstance(msg.timestamp, time):
            fix_time = datetime.combine(date.fromisoformat(utc_date), msg.timestamp.replace(tzinfo=None), UTC)
        try:
            altitude = float(msg.altitude) if msg.altitude not in (None, "") else None
        except (TypeError, ValueError):
            altitude = None
        speed_mps = heading = None
    elif sentence == "GLL":
        if msg.status != "A" or str(getattr(msg, "faa_mode", "") or "").upper() == "N":
            return []
        lat = _coordinate(msg.lat, msg.lat_dir, True, mode)
        lon = _coordinate(msg.lon, msg.lon_dir, False, mode)
        accuracy = float(_option(profile, "default_accuracy_m", 30.0))
        utc_date = frame.meta.get("utc_date")
        if utc_date and isinstance(msg.timestamp, time):
            fix_time = datetime.combine(date.fromisoformat(utc_date), msg.timestamp.replace(tzinfo=None), UTC)
        altitude = speed_mps = heading = None
    else:
        return []  # GSV, GSA, VTG ...: no position of their own
    if lat is None or lon is None or (lat == 0 and lon == 0):
        return []
    location = Location(
        lat=lat,
        lon=lon,
        accuracy_m=round(accuracy, 1),
        altitude_m=altitude,
        source="gnss",
        fix_time=fix_time,
        speed_mps=speed_mps,
        heading_deg=heading,
    )
    received = parse_time(frame.meta.get("received_at"))
    if received is not None and fix_time is not None and sentence in ("GGA", "GLL"):
        # These carry the time of day only; the date is the transport's guess. Near midnight the right
        # date is the day before or after: take the one closest to the time the line arrived.
        fix_time = min((fix_time + timedelta(days=k) for k in (-1, 0, 1)),
                       key=lambda t: abs((received - t).total_seconds()))
        location = location.model_copy(update={"fix_time": fix_time})
    events = [Decoded(action="location", location=location, occurred_at=fix_time, attributes=attributes)]
    return judge(events, received, max_fix_age(profile))
