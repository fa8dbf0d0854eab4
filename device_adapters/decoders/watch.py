"""The text protocol of the common 4G "SOS watches" (3G/SG/CS/ZJ ... prefixes) over TCP.

Wire format as documented by Traccar's WatchFrameDecoder/WatchProtocolDecoder (Apache-2.0):
`[MF*ID*LEN*CONTENT]` or, on some models, `[MF*ID*IDX*LEN*CONTENT]`, where MF is the manufacturer
prefix, ID the watch's registration id (often the IMEI), LEN four hex digits giving CONTENT's length in
bytes and CONTENT `TYPE[,field...]`. Inside a frame 0x7D escapes the bytes `} [ ] , *` as 7D 01..05.

Content types decoded here: `LK` (link keep-alive: a check-in), `UD`/`UD2`/`UD3`/`UD_LTE`/`UD_WCDMA`/
`WT` (position report), `AL`... (alarm: position report whose status word says why), health readings
(`bphrt`, `btemp2`, `heart`, `PULSE`, `BLOOD`) and control frames (`TKQ`, `TKQ2`, `INIT`). Status bits
(Traccar's decodeAlarm): 0 and 17 low battery, 1/18 geofence exit, 2/19 geofence enter, 14 power cut,
16 SOS, 20 removal from the wrist, 21/22 fall.

An alarm is never lost to a malformed descriptive field: only the status word (the alarm part) must
parse; an empty or garbled time, fix, coordinate, hemisphere or number is left out and named in
`decode_warnings` (docs/devices/partial-frames.md). Type names with suffixes (`AL_LTE`, `UD_WCDMA`) are
grouped by their prefix.

The decoder turns one frame into a flat document and the profile maps it to kinds. A fix the watch
marks `V` (invalid) is kept out of the location (the profile's `valid_if`), so the pipeline uses the
last known position; a fix whose date is far from the time the frame was received (`meta.received_at`,
set by the transport) is flagged last-known with its age, never presented as current. Pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.devices.decoding import Decoded, DecodeError, Frame, LengthError
from bridge.devices.fixage import judge, max_fix_age, parse_time
from bridge.devices.profiles import DeviceProfile, apply_profile

MAX_FRAME = 16 * 1024  # text frames are well under 1 KiB; voice (TK) and images are not accepted
_UNESCAPE = {1: ord("}"), 2: ord("["), 3: ord("]"), 4: ord(","), 5: ord("*")}
_ESCAPE = {v: k for k, v in _UNESCAPE.items()}
_MF = re.compile(rb"^[A-Z0-9]{2,4}$")
_ID = re.compile(rb"^[0-9A-Za-z]{1,24}$")
_HEX4 = re.compile(rb"^[0-9A-Fa-f]{4}$")
POSITION_TYPES = ("UD", "WT", "AL")
HEALTH_TYPES = frozenset({"PULSE", "HEART", "BLOOD", "BPHRT", "BTEMP2"})
CONTROL_TYPES = frozenset({"TKQ", "TKQ2", "INIT"})
# Status bits (Traccar WatchProtocolDecoder.decodeAlarm); ALARM_MASK is every bit that names a reason.
BITS = {
    "low_battery": (0, 17),
    "geofence_exit": (1, 18),
    "geofence_enter": (2, 19),
    "power_cut": (14,),
    "sos": (16,),
    "removal": (20,),
    "fall": (21, 22),
}
ALARM_MASK = sum(1 << b for bits in BITS.values() for b in bits)



@dataclass(frozen=True)
class WatchFrame:
    manufacturer: str
    watch_id: str
    index: str | None
    content: bytes
    length_ok: bool = True

    @property
    def type(self) -> str:
        return self.content.split(b",", 1)[0].decode("ascii", "replace")

    @property
    def body(self) -> str:
        parts = self.content.split(b",", 1)
        return parts[1].decode("utf-8", "replace") if len(parts) > 1 else ""


# -- framing -------------------------------------------------------------------------------------------
# The header up to the content: `[MF*ID*LEN*` or `[MF*ID*IDX*LEN*` (LEN: four hex digits).
_HEAD = re.compile(rb"\[([A-Z0-9]{2,4})\*([0-9A-Za-z]{1,24})\*(?:([0-9A-Fa-f]{4})\*)?([0-9A-Fa-f]{4})\*")
MAX_HEAD = 1 + 4 + 1 + 24 + 1 + 5 + 5
LENGTH_TOLERANCE = 16  # firmwares whose declared length is off by a few bytes (SG: 3 short)
_BOUNDARY = (b"[", b"\r", b"\n", b"\x00")


def _frame_end(buffer: bytes, content_at: int, declared: int, final: bool) -> int | None:
    """Index of the `]` closing the frame whose content starts at `content_at`, or None to wait for more.

    The declared length decides: the byte right after the content must be `]`, whatever `]` the content
    holds (a Wi-Fi name). A firmware whose length is off is tolerated when a `]` within LENGTH_TOLERANCE
    of that place is followed by the start of the next frame, a line end, or the end of what was sent
    (`final`: nothing more came in the grace time); then the nearest such `]` to the declared end wins.
    Once more than the tolerance beyond the declared end has arrived, the first `]` followed by a boundary
    ends the frame (the decoder then sees a length mismatch and decides). A pause never ends a frame that
    is still short of its declared length by more than the tolerance. Pure."""
    exact = content_at + declared
    if len(buffer) > exact and buffer[exact : exact + 1] == b"]":
        return exact
    known = len(buffer) >= exact + LENGTH_TOLERANCE + 2

    def closes(p: int) -> bool:
        after = buffer[p + 1 : p + 2]
        return buffer[p : p + 1] == b"]" and (after in _BOUNDARY if after else final)

    near = [p for p in range(max(content_at, exact - LENGTH_TOLERANCE), min(len(buffer), exact + LENGTH_TOLERANCE + 1))
            if closes(p)]
    if near and (known or final):
        return min(near, key=lambda p: (abs(p - exact), p))
    if known:
        return next((p for p in range(content_at, len(buffer)) if closes(p)), None)
    # A pause with the frame still short of its declared length by more than the tolerance: the rest is on
    # its way (a mobile network can stall a segment for seconds). Taking the `]` where the data stops would
    # cut a Wi-Fi name such as "a]b" and refuse the alarm. Wait; the next frame or MAX_FRAME ends the wait.
    return None


def split_frames(
    buffer: bytes, max_frame: int = MAX_FRAME, *, final: bool = False
) -> tuple[list[bytes], bytes, int]:
    """Complete frames from a TCP byte stream: (frames, what is left to wait for, bytes skipped).

    A frame is `[MF*ID*LEN*CONTENT]` cut by its declared length (see _frame_end), never at the first `]`:
    a `]` inside a field never splits a frame. `final`: the sender has paused (the listener's grace time),
    so a frame ending with the buffer may be taken. Noise before a frame is skipped; a partial frame longer
    than `max_frame` is dropped. Pure."""
    frames: list[bytes] = []
    skipped = 0
    while True:
        start = buffer.find(b"[")
        if start < 0:
            return frames, b"", skipped + len(buffer)
        skipped += start
        buffer = buffer[start:]
        head = _HEAD.match(buffer)
        if head is None:
            if len(buffer) < MAX_HEAD and b"]" not in buffer and not final:
                return frames, buffer, skipped  # the header may still be arriving
            skipped += 1  # not a frame header: resynchronise on the next `[`
            buffer = buffer[1:]
            continue
        end = _frame_end(buffer, head.end(), int(head[4], 16), final)
        if end is None:
            if len(buffer) > max_frame:
                return frames, b"", skipped + len(buffer)
            return frames, buffer, skipped
        frames.append(buffer[: end + 1])
        buffer = buffer[end + 1 :]


def unescape(data: bytes) -> bytes:
    """Undo the 0x7D escapes. A 0x7D not followed by 01..05 is kept as it is: a firmware that sends a
    Wi-Fi name's `}` unescaped must not cost an alarm. Pure."""
    out = bytearray()
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x7D and i + 1 < len(data) and data[i + 1] in _UNESCAPE:
            out.append(_UNESCAPE[data[i + 1]])
            i += 2
            continue
        out.append(b)
        i += 1
    return bytes(out)


def escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in _ESCAPE:
            out += bytes((0x7D, _ESCAPE[b]))
        else:
            out.append(b)
    return bytes(out)


def parse_frame(raw: bytes, strict: bool = True) -> WatchFrame:
    """Header and content of one frame; raises DecodeError. A length mismatch raises LengthError when
    `strict`, else it is reported in `length_ok` (watches in the field get it wrong: see decode()). Pure."""
    if len(raw) > MAX_FRAME:
        raise DecodeError(f"frame of {len(raw)} bytes exceeds {MAX_FRAME}")
    if len(raw) < 2 or raw[:1] != b"[" or raw[-1:] != b"]":
        raise DecodeError("not a watch frame: expected [MF*ID*LEN*CONTENT]")
    parts = raw[1:-1].split(b"*", 3)
    if len(parts) < 4:
        raise DecodeError("not a watch frame: expected [MF*ID*LEN*CONTENT]")
    mf, watch_id, first, rest = parts
    if not _MF.match(mf) or not _ID.match(watch_id):
        raise DecodeError("bad manufacturer prefix or watch id")
    index: bytes | None = None
    if _HEX4.match(first) and _HEX4.match(rest[:4]) and rest[4:5] == b"*":
        index, length, content = first, rest[:4], rest[5:]  # [MF*ID*IDX*LEN*CONTENT]
    else:
        length, content = first, rest
    if not _HEX4.match(length):
        raise DecodeError("the length field is not four hex digits")
    length_ok = int(length, 16) == len(content)  # the length counts the bytes as sent (escaped)
    content = unescape(content)
    if strict and not length_ok:
        raise LengthError(f"declared length {int(length, 16)} but the content has {len(content)} bytes")
    return WatchFrame(mf.decode(), watch_id.decode(), index.decode() if index else None, content, length_ok)


def build_frame(
    manufacturer: str, watch_id: str, content: bytes, index: str | None = None, *, binary: bool = False
) -> bytes:
    """A frame in the watch's own framing (replies, commands, and the virtual watch). Text content is sent
    as is (its commas separate fields); `binary` content (voice) is escaped. Pure."""
    body = escape(content) if binary else content
    head = f"[{manufacturer}*{watch_id}*" + (f"{index}*" if index else "") + f"{len(body):04X}*"
    return head.encode() + body + b"]"


def reply(frame: WatchFrame, content: str) -> bytes:
    """The answer the watch expects, e.g. `[3G*ID*0002*AL]` (Traccar's sendResponse)."""
    return build_frame(frame.manufacturer, frame.watch_id, content.encode("ascii"), frame.index)


def message_command(frame: WatchFrame | tuple[str, str, str | None], text: str) -> bytes:
    """`MESSAGE,<UTF-16BE hex>`: a text the watch shows on its screen (Traccar WatchProtocolEncoder)."""
    mf, watch_id, index = (
        (frame.manufacturer, frame.watch_id, frame.index) if isinstance(frame, WatchFrame) else frame
    )
    return build_frame(mf, watch_id, b"MESSAGE," + text.encode("utf-16-be").hex().upper().encode(), index)


# -- content -------------------------------------------------------------------------------------------
def frame_type(type_: str) -> str:
    upper = type_.upper()
    if upper == "LK":
        return "link"
    if upper.startswith("AL"):
        return "alarm"
    if upper.startswith(("UD", "WT")):
        return "position"
    if upper in HEALTH_TYPES:
        return "health"
    if upper in CONTROL_TYPES:
        return "control"
    return "other"


def _coordinate(value: str, hemisphere: str | None) -> float:
    v = float(value)
    return -abs(v) if hemisphere in ("S", "W") else v


def _fix_time(dd: str, mo: str, yy: str, hh: str, mi: str, ss: str) -> datetime | None:
    try:
        return datetime(2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss), tzinfo=UTC)
    except ValueError:
        return None


_HEX8 = re.compile(r"^[0-9A-Fa-f]{8}$")
_HEX_SHORT = re.compile(r"^[0-9A-Fa-f]{1,8}$")
_DDDDDD = re.compile(r"^\d{6}$")
_DEGREES = re.compile(r"^-?\d+(?:\.\d+)?$")
_DECIMAL = re.compile(r"^-?\d+(?:\.\d*)?$")
_INTEGER = re.compile(r"^\d+$")
STATUS_INDEX = 15  # date, time, A/V, lat, N/S, lon, E/W, speed, course, altitude, sats, rssi, battery, steps,
#                    tumbles, then the status word (Traccar's PATTERN_POSITION)
MAX_SHIFT = 2  # fields a firmware may drop or add before the status word
_NUMBERS: tuple[tuple[str, int, type[float] | type[int]], ...] = (
    ("speed_kmh", 7, float), ("course", 8, float), ("altitude_m", 9, float), ("satellites", 10, int),
    ("rssi", 11, int), ("battery_pct", 12, int), ("steps", 13, int),
)


def _status_index(fields: list[str]) -> int | None:
    """Where the status word is. Most firmwares send eight hex digits: the 8-hex-digit field nearest to
    field 15 (the documented place; a firmware that drops or adds a field before it shifts it). Some SG
    firmwares send four (`0001`): then field 15 when it is hex. Cells and Wi-Fi after it are never taken
    for it (at most MAX_SHIFT fields away). None: the alarm part is unreadable."""
    near = range(STATUS_INDEX - MAX_SHIFT, min(len(fields), STATUS_INDEX + MAX_SHIFT + 1))
    candidates = [i for i in near if _HEX8.match(fields[i].strip())]
    if candidates:
        return min(candidates, key=lambda i: (abs(i - STATUS_INDEX), i))
    if len(fields) > STATUS_INDEX and _HEX_SHORT.match(fields[STATUS_INDEX].strip()):
        return STATUS_INDEX
    return None


def _coordinates(fields: list[str]) -> tuple[float, float] | None:
    """Latitude and longitude from fields 3-6 (degrees and hemisphere; an empty E/W means east, as
    Traccar's pattern allows), or None when any of them is not what the protocol says."""
    lat_s, ns, lon_s, ew = (f.strip() for f in fields[3:7])
    if not (_DEGREES.match(lat_s) and _DEGREES.match(lon_s) and ns in ("N", "S") and ew in ("E", "W", "")):
        return None
    lat, lon = _coordinate(lat_s, ns), _coordinate(lon_s, ew)
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def parse_position(body: str) -> dict[str, Any]:
    """A position or alarm report. The alarm part (the status word) decides whether it can be decoded at
    all; every descriptive part (time, fix, numbers) that does not parse is left out and named in
    `decode_warnings`, so an SOS is never lost to an empty coordinate or a garbled battery level."""
    fields = body.split(",")
    idx = _status_index(fields)
    if idx is None:
        raise DecodeError("alarm/position report without a readable status word")
    status = int(fields[idx].strip(), 16)
    warnings: list[str] = []
    doc: dict[str, Any] = {"status": fields[idx].strip().upper(), "alarm_bits": status & ALARM_MASK}
    for name, bits in BITS.items():
        doc[name] = any(status >> b & 1 for b in bits)
    if idx != STATUS_INDEX:
        warnings.append("field_layout")  # fields shifted: nothing between the fix flag and the status is trusted
    fix = fields[2].strip() if len(fields) > 2 else ""
    doc["fix_valid"] = fix == "A"
    if fix not in ("A", "V"):
        warnings.append("fix_validity")
    date, time_ = (f.strip() for f in fields[0:2]) if idx >= 2 else ("", "")
    fix_time = None
    if _DDDDDD.match(date) and _DDDDDD.match(time_):
        fix_time = _fix_time(date[0:2], date[2:4], date[4:6], time_[0:2], time_[2:4], time_[4:6])
    if fix_time is not None:
        doc["fix_time"] = fix_time.isoformat()
        doc["frame_time"] = fix_time.strftime("%y%m%d%H%M%S")  # for the message id
    else:
        warnings.append("time")
    position = _coordinates(fields) if idx == STATUS_INDEX else None
    if position is not None:
        doc["lat"], doc["lon"] = position
    elif idx != STATUS_INDEX or doc["fix_valid"] or any(f.strip() for f in fields[3:6]):
        warnings.append("location")  # an invalid fix with empty coordinates is no fix, not a damaged one
    if idx == STATUS_INDEX:
        for name, i, cast in _NUMBERS:
            value = fields[i].strip()
            if (_DECIMAL if cast is float else _INTEGER).match(value):
                doc[name] = cast(value)
            elif value:
                warnings.append(name)
    if warnings:
        doc["decode_warnings"] = warnings
    return doc


def parse_content(frame: WatchFrame) -> dict[str, Any]:
    """The frame as a flat document for the profile's mappings. Pure."""
    type_ = frame.type
    group = frame_type(type_)
    doc: dict[str, Any] = {
        "manufacturer": frame.manufacturer,
        "watch_id": frame.watch_id,
        "type": type_,
        "frame_type": group,
    }
    body = frame.body
    if group in ("alarm", "position"):
        doc.update(parse_position(body))
        if "frame_time" in doc:
            doc["msg_id"] = f"{frame.watch_id}:{type_}:{doc['frame_time']}:{doc['status']}"
    elif group == "link":
        values = body.split(",") if body else []
        if len(values) >= 3 and values[2].isdigit():
            doc["battery_pct"] = int(values[2])
    elif group == "health":
        doc["values"] = body[:200]
    return doc


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    """Half of the genuine frames in Traccar's WatchProtocolDecoderTest declare a length that does not
    match their content (SG firmwares are 3 bytes off), so by default a length mismatch is tolerated when
    the alarm part of the content parses (and reported as the attribute `length_mismatch`); a mismatched
    frame whose alarm part does not parse is refused as bad_length. Option `strict_length: true` refuses
    every mismatch. Descriptive fields that do not parse are named in `decode_warnings` (parse_position)."""
    parsed = parse_frame(frame.payload, strict=bool(profile.options.get("strict_length", False)))
    try:
        doc = parse_content(parsed)
    except DecodeError as exc:
        if not parsed.length_ok:
            raise LengthError(f"length mismatch and {exc}") from None
        raise
    if not parsed.length_ok:
        doc["length_mismatch"] = True
    events = apply_profile(doc, profile, frame.meta)
    events = judge(events, parse_time(frame.meta.get("received_at")), max_fix_age(profile))
    return [e.model_copy(update={"device_ref": e.device_ref or parsed.watch_id}) for e in events]
