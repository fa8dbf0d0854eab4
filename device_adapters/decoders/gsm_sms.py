"""SOS text messages from cheap GSM/GPS trackers, read from a modem in SMS text mode.

Tracker bodies have no standard (Coban TK-103/TK-203 manuals, Bulldog Secure FAQ): `lat:`/`long:`
labels (TK-203, Coban), `SOS,yymmdd hh:mm,A|V,...` (Bulldog Secure), Google Maps links, typos
("heip me"). The decoder pulls every field it recognises into a flat document and the model's profile
maps it to kinds with regexes, so a new vendor is a new YAML file, not new code.

Frame: payload = the SMS body (UTF-8), meta = {sender, scts} as the modem reported them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bridge.decoding import Decoded, DecodeError, Frame
from bridge.profiles import DeviceProfile, apply_profile

_LAT = re.compile(r"\blat(?:itude)?[:=\s]\s*(-?\d{1,2}\.\d+)", re.I)
_LON = re.compile(r"\b(?:long?|lng|longitude)[:=\s]\s*(-?\d{1,3}\.\d+)", re.I)
_MAPS = re.compile(r"[?&](?:q|ll)=(?:loc:)?(-?\d{1,2}\.\d+)\s*,\s*(-?\d{1,3}\.\d+)", re.I)
_SPEED = re.compile(r"\bspeed[:=\s]\s*(\d+(?:\.\d+)?)", re.I)
_BATT_V = re.compile(r"\b([FL]):\s*(\d\.\d+)V", re.I)
_IMEI = re.compile(r"\bimei[:=\s]\s*(\d{15})", re.I)
_BULLDOG = re.compile(
    r"^(?P<keyword>[A-Za-z!]+),(?P<time>\d{6} \d{2}:\d{2}),(?P<valid>[AV]),(?P<signal>\d{1,2}),"
    r"(?P<speed>\d+(?:\.\d+)?)\s*km/h,(?P<battery>\d{1,3})%",
    re.I,
)
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


def parse_body(body: str, sender: str = "", scts: str = "") -> dict[str, Any]:
    """Every field this module knows how to find in a tracker SMS. Pure."""
    doc: dict[str, Any] = {"text": body, "sender": sender}
    if m := _BULLDOG.match(body.strip()):
        doc.update(
            keyword=m["keyword"].upper(),
            gps_valid=m["valid"].upper() == "A",
            signal=int(m["signal"]),
            speed_kmh=float(m["speed"]),
            battery_pct=int(m["battery"]),
        )
    if (lat := _LAT.search(body)) and (lon := _LON.search(body)):
        doc["lat"], doc["lon"] = float(lat[1]), float(lon[1])
    elif maps := _MAPS.search(body):
        doc["lat"], doc["lon"] = float(maps[1]), float(maps[2])
    if (speed := _SPEED.search(body)) and "speed_kmh" not in doc:
        doc["speed_kmh"] = float(speed[1])
    if batt := _BATT_V.search(body):
        doc["battery_state"], doc["battery_v"] = batt[1].upper(), float(batt[2])
    if imei := _IMEI.search(body):
        doc["imei"] = imei[1]
    sent = parse_scts(scts) if scts else None
    if sent is not None:
        doc["sent_at"] = sent.isoformat()
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
    return apply_profile(doc, profile, frame.meta)
