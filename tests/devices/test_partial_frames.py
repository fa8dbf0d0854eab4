"""An alarm is never lost to a malformed descriptive field (docs/devices/partial-frames.md).

The mutation test takes every alarm sample of every built-in profile (hardware/profiles/*.yaml samples
expected to raise an alert), damages each descriptive field in turn (empty, zero, garbled, missing
separator, unknown hemisphere, extra fields, truncation, type-name variants) and asserts the alert is still
raised with the right kind. Each sample must yield mutants unless its format has no descriptive field
(listed in NO_DESCRIPTIVE_FIELD with the reason), so the test cannot pass by mutating nothing.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.devices.decoding import DECODE_WARNINGS, DecodeError, Frame, get_decoder
from bridge.devices.profiles import DeviceProfile, ProfileRegistry, Sample
from device_adapters.decoders import diy_frame, watch

REGISTRY = ProfileRegistry.load()
ALARMS = [
    (p, s)
    for p in REGISTRY.profiles.values()
    for s in p.samples
    if not s.expect_error and any(e.action == "alert" for e in s.expect)
]
# Formats whose alarm samples carry no field that only describes the alarm: every byte is the event.
NO_DESCRIPTIVE_FIELD = {
    "contact_id": "fixed-width digits (account, event, group, zone) under a checksum",
    "dc09": "SIA/ADM-CID event codes; the timestamp is DC-09's anti-replay field, checked by the transport",
}
# Keys of JSON payloads that describe an alarm (where, when, battery, radio), never decide it.
DESCRIPTIVE_KEYS = frozenset({
    "lat", "lon", "latitude", "longitude", "acc", "accuracy_m", "alt", "altitude", "tst", "occurred_at", "time",
    "batt", "battery", "linkquality", "last_seen", "vel", "cog", "rssi", "snr", "location", "frm_payload_tail",
})
GARBLE = ("", 0, "x]?,*", None, -999999)

Mutant = tuple[str, Frame]


def _json_leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*path, k), v
            yield from _json_leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _json_leaves(v, (*path, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    out = copy.deepcopy(doc)
    cur = out
    for part in path[:-1]:
        cur = cur[part]
    if delete:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return out


def json_mutants(sample: Sample) -> Iterator[Mutant]:
    frame = sample.frame()
    doc = json.loads(frame.payload)
    for path, _value in list(_json_leaves(doc)):
        if path[-1] not in DESCRIPTIVE_KEYS:
            continue
        for bad in GARBLE:
            yield f"{'.'.join(map(str, path))}={bad!r}", Frame(payload=json.dumps(_set(doc, path, bad)).encode(),
                                                                meta=frame.meta)
        yield f"{'.'.join(map(str, path))} missing", Frame(payload=json.dumps(_set(doc, path, None, True)).encode(),
                                                           meta=frame.meta)
    extra = {**doc, "zz_extra": "],[*"}
    yield "extra field", Frame(payload=json.dumps(extra).encode(), meta=frame.meta)


def _watch_frame(head: bytes, content: bytes, keep_length: bytes | None = None) -> bytes:
    length = keep_length if keep_length is not None else f"{len(content):04X}".encode()
    return head + length + b"*" + content + b"]"


def watch_mutants(sample: Sample) -> Iterator[Mutant]:
    raw = sample.frame().payload
    parsed = watch.parse_frame(raw, strict=False)
    head = raw[: raw.index(parsed.content) - 5]  # `[MF*ID*` (and `IDX*`) before the length
    old_length = raw[len(head) : len(head) + 4]
    type_, fields = parsed.type, parsed.body.split(",")
    status = 15  # the status word (Traccar PATTERN_POSITION): the alarm part, never mutated

    def emit(name: str, new_type: str, new_fields: list[str]) -> Iterator[Mutant]:
        content = ",".join([new_type, *new_fields]).encode()
        yield name, Frame(payload=_watch_frame(head, content), meta=sample.meta)
        yield f"{name} (stale length)", Frame(payload=_watch_frame(head, content, old_length), meta=sample.meta)

    for suffix in ("_LTE", "_WCDMA", "2", "3"):
        yield from emit(f"type {type_}{suffix}", type_ + suffix, fields)
    for i in range(len(fields)):
        if i == status:
            continue
        for bad in ("", "0", "x]?", "-", " "):
            yield from emit(f"field {i}={bad!r}", type_, [*fields[:i], bad, *fields[i + 1 :]])
        if i + 1 < len(fields) and i + 1 != status:
            merged = fields[i] + fields[i + 1]
            yield from emit(f"separator after field {i} missing", type_, [*fields[:i], merged, *fields[i + 2 :]])
        if i < status:
            yield from emit(f"extra field before {i}", type_, [*fields[:i], "9", *fields[i:]])
    for i in (4, 6):  # hemispheres
        yield from emit(f"hemisphere {i}=X", type_, [*fields[:i], "X", *fields[i + 1 :]])
    for i in (3, 4, 5, 6):
        yield from emit(f"void fix, field {i} and after empty", type_,
                        [*fields[:2], "V", *([""] * (status - 3)), *fields[status:]])
    yield from emit("truncated after the status word", type_, fields[: status + 1])
    yield from emit("extra trailing fields", type_, [*fields, "Wi-Fi],name", "aa:bb", "-60"])


def diy_mutants(sample: Sample) -> Iterator[Mutant]:
    h = diy_frame.parse(sample.frame().payload)
    alarm, location = h.data[:2], h.data[2:] or bytes(10)
    for n in range(len(location)):
        data = alarm + location[:n]
        yield f"location cut to {n} bytes", Frame(payload=diy_frame.encode(h.type, h.unit, h.boot, h.seq, data))
    for bad in (b"\x7f\xff\xff\xff" * 2 + b"\x00\x00", bytes(10), b"\xff" * 10):
        payload = diy_frame.encode(h.type, h.unit, h.boot, h.seq, alarm + bad)
        yield f"location {bad.hex()}", Frame(payload=payload)


_NUMBER = re.compile(r"-?\d+(?:[.:/]\d+)*")
_ALARM_WORDS = re.compile(r"(?i)\bsos\b|\bhe[il]p\s*me|\baccident|\bL:")  # the SMS profiles' alarm part


def sms_mutants(sample: Sample) -> Iterator[Mutant]:
    frame = sample.frame()
    text = frame.payload.decode()
    for m in _NUMBER.finditer(text):
        if text[max(0, m.start() - 5) : m.start()] == "imei:":
            continue  # the sender's identity, not a description
        for bad in ("", "0", "x?", "99999"):
            mutated = text[: m.start()] + bad + text[m.end() :]
            yield f"{m.group()!r}->{bad!r}", Frame(payload=mutated.encode(), meta=frame.meta)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if len(lines) > 1 and not _ALARM_WORDS.search(line):
            cut = "\n".join(lines[:i] + lines[i + 1 :])
            yield f"line {i} cut", Frame(payload=cut.encode(), meta=frame.meta)


def lgt92_mutants(sample: Sample) -> Iterator[Mutant]:
    """LoRaWAN codecs: the raw frame cut after its alarm byte, plus the envelope's descriptive keys."""
    yield from json_mutants(sample)
    doc = json.loads(sample.frame().payload)
    import base64

    data = base64.b64decode(doc["data"])
    for n in (9, 10):
        cut = {**doc, "data": base64.b64encode(data[:n]).decode()}
        yield f"payload cut to {n} bytes", Frame(payload=json.dumps(cut).encode(), meta=sample.meta)


def mutants(profile: DeviceProfile, sample: Sample) -> list[Mutant]:
    if profile.decoder == "watch":
        return list(watch_mutants(sample))
    if profile.decoder == "diy_frame":
        return list(diy_mutants(sample))
    if profile.decoder == "gsm_sms":
        return list(sms_mutants(sample))
    if profile.options.get("codec") == "dragino_lgt92":
        return list(lgt92_mutants(sample))
    if profile.decoder in NO_DESCRIPTIVE_FIELD:
        return []
    return list(json_mutants(sample))


def test_every_alarm_sample_has_a_mutator() -> None:
    formats = {p.decoder for p, _ in ALARMS}
    assert {"watch", "json", "owntracks", "lorawan", "zigbee2mqtt", "gsm_sms", "diy_frame"} <= formats
    for profile, sample in ALARMS:
        made = mutants(profile, sample)
        assert made or profile.decoder in NO_DESCRIPTIVE_FIELD, f"{profile.id}:{sample.name} has no mutants"


@pytest.mark.parametrize(("profile", "sample"), ALARMS, ids=[f"{p.id}:{s.name}" for p, s in ALARMS])
def test_alarm_survives_damaged_descriptive_fields(profile: DeviceProfile, sample: Sample) -> None:
    kinds = sorted(e.kind.value for e in sample.expect if e.action == "alert" and e.kind is not None)
    decoder = get_decoder(profile.decoder)
    lost: list[str] = []
    for name, frame in mutants(profile, sample):
        try:
            events = decoder(frame, profile)
        except DecodeError as exc:
            lost.append(f"{name}: refused ({exc})")
            continue
        got = sorted(e.kind.value for e in events if e.action == "alert" and e.kind is not None)
        if got != kinds:
            lost.append(f"{name}: {got} instead of {kinds}")
    assert not lost, f"{len(lost)} mutants lost the alarm:\n" + "\n".join(lost[:20])


# -- the concrete loss that started this: a 4G watch SOS with a void fix and empty coordinates ----------
LTE_SOS = b"AL_LTE,290124,101530,V,,,,,0.00,0.0,0.0,0,100,81,0,0,00010000,2,255,460,0,9336,3981,141,9336,3912,141"


def test_lte_sos_with_empty_coordinates_raises_sos_and_names_what_was_dropped() -> None:
    profile = REGISTRY.get("watch-3g-protocol")
    assert profile is not None
    raw = watch.build_frame("3G", "8809008845", LTE_SOS)
    [event] = get_decoder("watch")(Frame(payload=raw, meta={"protocol": "watch"}), profile)
    assert (event.action, event.kind and event.kind.value, event.location) == ("alert", "sos", None)
    assert DECODE_WARNINGS not in event.attributes  # a void fix with empty fields is no fix, not damage


def test_garbled_coordinates_are_named_in_decode_warnings() -> None:
    profile = REGISTRY.get("watch-3g-protocol")
    assert profile is not None
    body = LTE_SOS.replace(b",V,,,,,", b",A,22.5x,Q,,E,")
    [event] = get_decoder("watch")(Frame(payload=watch.build_frame("3G", "8809008845", body)), profile)
    assert event.kind is not None and event.kind.value == "sos" and event.location is None
    assert event.attributes[DECODE_WARNINGS] == ["location"]


def test_an_unreadable_alarm_part_is_still_refused() -> None:
    profile = REGISTRY.get("watch-3g-protocol")
    assert profile is not None
    body = LTE_SOS.replace(b"00010000", b"0001ZZZZ")
    with pytest.raises(DecodeError, match="status word"):
        get_decoder("watch")(Frame(payload=watch.build_frame("3G", "8809008845", body)), profile)
