"""Ademco Contact ID (SIA DC-05) lines as an alarm receiver prints them: `ACCT MT Q XYZ GG CCC S`.

Format and checksum rule from SpanDSP's `ademco_contactid.c` (SIA DC-05
layout): every digit counts its value, except 0 which
counts 10 and B-F which count 11-15; the sum including the checksum digit S is a multiple of 15, and S is
never 0 (a sum already divisible by 15 gives S = F). Hex A is not a Contact ID digit.

The decoder checks the checksum and turns the line into a flat document; the device profile maps event
codes to kinds (so a site can decide, for example, whether 123 audible panic is `panic` or `sos`).
"""

from __future__ import annotations

import re
from typing import Any

from bridge.devices.decoding import ChecksumError, Decoded, DecodeError, Frame
from bridge.devices.profiles import DeviceProfile, apply_profile

_DIGIT_VALUES = {**{str(d): d for d in range(1, 10)}, "0": 10, "B": 11, "C": 12, "D": 13, "E": 14, "F": 15}
# Receivers that print what they heard on the DTMF line use the keypad symbols for B-F.
_DTMF_TO_HEX = str.maketrans({"*": "B", "#": "C"})
_LINE = re.compile(r"^[0-9B-F]{16,22}$")



def checksum_digit(body: str) -> str:
    """The checksum digit S for the digits before it."""
    total = sum(_DIGIT_VALUES[c] for c in body.upper())
    s = 15 - total % 15  # 1..15
    return {10: "0", 11: "B", 12: "C", 13: "D", 14: "E", 15: "F"}.get(s, str(s))


def checksum_ok(line: str) -> bool:
    return sum(_DIGIT_VALUES[c] for c in line) % 15 == 0


def normalise(text: str) -> str:
    return re.sub(r"[\s\-]", "", text.strip().upper().translate(_DTMF_TO_HEX))


def parse_line(text: str) -> dict[str, Any]:
    """Split and verify one line; raises DecodeError / ChecksumError. Pure."""
    line = normalise(text)
    if not _LINE.match(line):
        raise DecodeError(f"not a Contact ID line: {text.strip()[:40]!r}")
    if not checksum_ok(line):
        raise ChecksumError("Contact ID checksum does not verify")
    # The account is everything before the fixed-width 12-digit tail (some receivers print 6-10 digits).
    acct_len = len(line) - 12
    acct, rest = line[:acct_len], line[acct_len:]
    mt, q, xyz, gg, ccc = rest[0:2], rest[2], rest[3:6], rest[6:8], rest[8:11]
    if mt not in ("18", "98"):
        raise DecodeError(f"unknown Contact ID message type {mt!r}")
    if q not in ("1", "3", "6"):
        raise DecodeError(f"unknown Contact ID qualifier {q!r}")
    return {
        "account": acct,
        "message_type": mt,
        "qualifier": q,
        "event": xyz,
        "group": gg,
        "zone": ccc,
        "code": f"{'E' if q == '1' else 'R' if q == '3' else 'S'}{xyz}",
    }


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    try:
        text = frame.payload.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("Contact ID lines are ASCII") from None
    doc = parse_line(text)
    events = apply_profile(doc, profile, frame.meta)
    return [e.model_copy(update={"device_ref": e.device_ref or doc["account"]}) for e in events]
