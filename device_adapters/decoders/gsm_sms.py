"""SOS text messages from cheap GSM/GPS trackers, read from a modem in SMS text mode.

Tracker bodies have no standard (Coban TK-103/TK-203 manuals, Bulldog Secure FAQ): `lat:`/`long:`
labels (TK-203, Coban), `SOS,yymmdd hh:mm,A|V,...` (Bulldog Secure), Google Maps links, typos
("heip me"). The decoder pulls every field it recognises into a flat document and the model's profile
maps it to kinds with regexes, so a new vendor is a new YAML file, not new code.

Frame: payload = the SMS body (UTF-8), meta = {sender, scts} as the modem reported them.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bridge.devices.decoding import DECODE_WARNINGS, Decoded, DecodeError, Frame
from bridge.devices.fixage import judge, max_fix_age, parse_time
from bridge.devices.profiles import DeviceProfile, apply_profile

_LAT = re.compile(r"\blat(?:itude)?[:=\s]\s*(-?\d{1,2}\.\d+)", re.I)
_LON = re.compile(r"\b(?:long?|lng|longitude)[:=\s]\s*(-?\d{1,3}\.\d+)", re.I)
_MAPS = re.compile(r"[?&](?:q|ll)=(?:loc:)?(-?\d{1,2}\.\d+)\s*,\s*(-?\d{1,3}\.\d+)", re.I)
_SPEED = re.compile(r"\bspeed[:=\s]\s*(\d+(?:\.\d+)?)", re.I)
# Coban `F:4.32V` / `L:3.68V`: the letter (full / low) is the alarm part, the voltage only describes it.
_BATT_V = re.compile(r"\b([FL]):\s*([^\s,]*)", re.I)
_VOLTS = re.compile(r"^(\d{1,2}(?:\.\d+)?)V$", re.I)
_IMEI = re.compile(r"\bimei[:=\s]\s*(\d{15})", re.I)
# Bulldog Secure: `KEYWORD,yymmdd hh:mm,A|V,signal,speed km/h,battery%,...`. The keyword is the alarm part;
# each later field is checked on its own and dropped (named in decode_warnings) when it does not parse.
_KEYWORD = re.compile(r"^[A-Za-z!]+$")
_BULLDOG_FIELDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("time", re.compile(r"^\d{6} \d{2}:\d{2}$")),
    ("gps_valid", re.compile(r"^[AV]$", re.I)),
    ("signal", re.compile(r"^\d{1,2}$")),
    ("speed_kmh", re.compile(r"^(\d+(?:\.\d+)?)\s*km/h$", re.I)),
    ("battery_pct", re.compile(r"^(\d{1,3})%$")),
)


def _bulldog(body: str) -> dict[str, Any]:
    """The Bulldog Secure fields of `body` ({} when it does not start with `KEYWORD,`). Pure."""
    parts = [p.strip() for p in body.strip().splitlines()[0].split(",")] if body.strip() else []
    if len(parts) < 2 or not _KEYWORD.match(parts[0]):
        return {}
    doc: dict[str, Any] = {"keyword": parts[0].upper()}
    warnings: list[str] = []
    for (name, pattern), value in zip(_BULLDOG_FIELDS, [*parts[1:], *[""] * len(_BULLDOG_FIELDS)], strict=False):
        m = pattern.match(value)
        if m is None:
            warnings.append(name)
        elif name == "gps_valid":
            doc[name] = value.upper() == "A"
        elif name == "time":
            doc[name] = value
        else:
            doc[name] = (float if name == "speed_kmh" else int)(m.group(m.lastindex or 0))
    if warnings:
        doc[DECODE_WARNINGS] = warnings
    return doc
# SIM800/SIM900 `AT+CIPGSMLOC=1,1` answer, forwarded in the text by trackers built on those modems
# (SIM800 Series AT Command Manual): location code 0 = success, then LONGITUDE first, latitude, UTC date
# and time. A position of the serving cell, not of the person: no radius is reported.
_CIPGSMLOC = re.compile(
    r"\+CIPGSMLOC:\s*0,(-?\d{1,3}\.\d+),(-?\d{1,2}\.\d+),(\d{4})/(\d{2})/(\d{2}),(\d{2}):(\d{2}):(\d{2})"
)
DEFAULT_CELL_ACCURACY_M = 1000.0
_SCTS = re.compile(r"^(\d{2})/(\d{2})/(\d{2}),(\d{2}):(\d{2})[: ](\d{2})([+-])(\d{1,2})$")


def parse_scts(scts: str) -> datetime | None:
    """3GPP TS 23.040 service-centre time stamp `yy/MM/dd,hh:mm:ss±zz`; zz is in quarter hours."""
    m = _SCTS.match(scts.strip().strip('"'))
    if not m:
        return None
    yy, mo, dd, hh, mi, ss, sign, qh = m.groups()
    offset = timedelta(minutes=15 * int(qh)) * (1 if sign == "+" else -1)
    try:
        # Two-digit years: 80-99 are the 1900s (manual examples from 1998 exist), the rest 2000s.
        year = int(yy) + (1900 if int(yy) >= 80 else 2000)
        local = datetime(year, int(mo), int(dd), int(hh), int(mi), int(ss), tzinfo=timezone(offset))
    except ValueError:
        return None
    return local.astimezone(UTC)


def parse_scts_offset(scts: str) -> timezone | None:
    m = _SCTS.match(scts.strip().strip('"'))
    if not m:
        return None
    minutes = 15 * int(m.group(8)) * (1 if m.group(7) == "+" else -1)
    try:
        return timezone(timedelta(minutes=minutes))
    except ValueError:
        return None


def parse_body(body: str, sender: str = "", scts: str = "") -> dict[str, Any]:
    """Every field this module knows how to find in a tracker SMS. Pure."""
    doc: dict[str, Any] = {"text": body, "sender": sender}
    doc.update(_bulldog(body))
    if (lat := _LAT.search(body)) and (lon := _LON.search(body)):
        doc["lat"], doc["lon"] = float(lat[1]), float(lon[1])
    elif maps := _MAPS.search(body):
        doc["lat"], doc["lon"] = float(maps[1]), float(maps[2])
    if "lat" not in doc and (cell := _CIPGSMLOC.search(body)):
        lon_c, lat_c = float(cell[1]), float(cell[2])
        if -90 <= lat_c <= 90 and -180 <= lon_c <= 180:
            doc["lat"], doc["lon"], doc["loc_source"] = lat_c, lon_c, "cell"
            with contextlib.suppress(ValueError):
                y, mo, d, h, mi, sec = (int(cell[i]) for i in range(3, 9))
                when = datetime(y, mo, d, h, mi, sec, tzinfo=UTC)
                doc["fix_time"] = when.isoformat()
    if (speed := _SPEED.search(body)) and "speed_kmh" not in doc:
        doc["speed_kmh"] = float(speed[1])
    if batt := _BATT_V.search(body):
        doc["battery_state"] = batt[1].upper()
        if volts := _VOLTS.match(batt[2]):
            doc["battery_v"] = float(volts[1])
        else:
            doc[DECODE_WARNINGS] = [*doc.get(DECODE_WARNINGS, []), "battery_v"]
    if imei := _IMEI.search(body):
        doc["imei"] = imei[1]
    sent = parse_scts(scts) if scts else None
    if sent is not None:
        doc["sent_at"] = sent.isoformat()
        if "time" in doc and "fix_time" not in doc:
            # Bulldog's `yymmdd hh:mm` is the tracker's local time: read it in the SCTS's zone.
            with contextlib.suppress(ValueError):
                local = datetime.strptime(doc["time"], "%y%m%d %H:%M")
                offset = parse_scts_offset(scts)
                if offset is not None:
                    doc["fix_time"] = local.replace(tzinfo=offset).astimezone(UTC).isoformat()
    # The same stored SMS read twice (after a crash before AT+CMGD) must not raise a second alert.
    digest = hashlib.sha256(f"{sender}|{scts}|{body}".encode()).hexdigest()[:16]
    doc["sms_id"] = f"sms-{digest}"
    return doc


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    try:
        body = frame.payload.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("SMS body is not text (PDU mode?)") from None
    if not body.strip():
        raise DecodeError("empty SMS body")
    doc = parse_body(body, frame.meta.get("sender", ""), frame.meta.get("scts", ""))
    if doc.get("loc_source") == "cell":
        doc["loc_accuracy_m"] = float(profile.options.get("cell_accuracy_m", DEFAULT_CELL_ACCURACY_M))
    events = apply_profile(doc, profile, frame.meta)
    # A fix far older than the text was sent (the network's SCTS; else when it arrived) is last known.
    now = parse_time(doc.get("sent_at")) or parse_time(frame.meta.get("received_at"))
    return judge(events, now, max_fix_age(profile))
