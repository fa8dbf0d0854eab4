"""Fuzz every registered decoder: it returns list[Decoded] or raises DecodeError, never anything else.

Decoders are discovered from the `sosbridge.decoders` entry points (a decoder a plug-in adds is fuzzed
too) and driven with every device profile in hardware/profiles/ that names them. Inputs are random bytes,
valid JSON of the wrong shape, the profiles' own sample frames (each cites its upstream source in the
YAML) with byte flips, truncations and insertions, and sample JSON documents with one node replaced by a
hostile value (huge numbers, NaN, wrong types, deep nesting). bench/fuzz.py runs the same property at
100,000 cases per decoder; this file keeps ~200 examples per decoder so the suite stays fast.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.devices.decoding import Decoded, DecodeError, Frame, decoders
from bridge.devices.profiles import DeviceProfile, ProfileRegistry

REGISTRY = ProfileRegistry.load()
DECODERS = decoders()

KEYS = [
    "action", "kind", "state", "lat", "lon", "acc", "tst", "_type", "object", "fPort", "data", "frm_payload",
    "uplink_message", "deviceInfo", "devEui", "time", "intent", "intentName", "confidenceScore", "siteId",
    "last_seen", "sos", "message_id", "location", "end_device_ids", "decoded_payload", "input",
]  # fmt: skip

HUGE = [10**400, 2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 5e-324]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "NaN", "1e999", "2026-13-45T99:99:99Z", "TRUE", "emergency", "offline", "\u202e"]),
)
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


def dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def profiles_for(name: str) -> list[DeviceProfile]:
    # A decoder no profile names (chirpstack/ttn are reached through `lorawan`) gets every profile.
    found = REGISTRY.by_decoder(name)
    return found or [p.model_copy(update={"decoder": name}) for p in REGISTRY.profiles.values()]


def seeds_for(profiles: list[DeviceProfile]) -> list[Frame]:
    return [s.frame() for p in profiles for s in p.samples] or [Frame(payload=b"{}")]


def json_nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += json_nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += json_nodes(v, (*path, i))
    return found


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: replaced(doc[head], rest, value)}
    copy = list(doc)
    copy[head] = replaced(copy[head], rest, value)
    return copy


@st.composite
def byte_mutation(draw: st.DrawFn, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "duplicate", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b",", b"*", b"\r\n", b"\xc3"]))
        elif op == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 16))]
        elif data:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


@st.composite
def json_mutation(draw: st.DrawFn, payload: bytes) -> bytes:
    doc = json.loads(payload)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(json_nodes(doc)))
        doc = replaced(doc, path, draw(json_values))
    return dump(doc)


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([50, 1000, 5000, 20000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"object":', "}"), ('{"a":', "}")]))
    return (opener * depth + "1" + closer * draw(st.sampled_from([depth, 0]))).encode()


@st.composite
def frames(draw: st.DrawFn, seeds: list[Frame]) -> Frame:
    seed = draw(st.sampled_from(seeds))
    try:
        json.loads(seed.payload)
        is_json = True
    except ValueError:
        is_json = False
    strategies = [
        st.binary(max_size=200),
        json_values.map(dump),
        deep_nesting(),
        byte_mutation(seed.payload),
        st.just(seed.payload),
    ]
    if is_json:
        strategies.append(json_mutation(seed.payload))
    payload = draw(st.one_of(*strategies))
    meta = draw(
        st.just(dict(seed.meta))
        | st.dictionaries(
            st.sampled_from(["topic", "port", "f_port", "network", "event", "sender", "subtopic", "utc_date"]),
            st.text(max_size=30),
            max_size=4,
        )
    )
    return Frame(payload=payload, meta=meta, retained=draw(st.booleans()))


def check(name: str, frame: Frame, profile: DeviceProfile) -> None:
    try:
        result = DECODERS[name](frame, profile)
    except DecodeError:
        return
    assert isinstance(result, list), f"{name} returned {type(result).__name__}"
    assert all(isinstance(d, Decoded) for d in result)


def test_every_entry_point_is_fuzzed() -> None:
    """Discovery is by entry point: every registered decoder loads and is in the fuzz set."""
    registered = {ep.name for ep in entry_points(group="sosbridge.decoders")}
    assert registered, "no decoders registered"
    assert registered <= set(DECODERS)
    for name in DECODERS:
        assert profiles_for(name), name


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_never_crashes(name: str) -> None:
    profiles = profiles_for(name)
    seeds = seeds_for(profiles)

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        database=None,
    )
    @given(frame=frames(seeds), profile=st.sampled_from(profiles))
    def run(frame: Frame, profile: DeviceProfile) -> None:
        check(name, frame, profile)

    run()


# -- regressions: inputs bench/fuzz.py found crashing, now DecodeError ---------------------------------------
JSON_NAMES = ("json", "zigbee2mqtt", "chirpstack", "ttn", "lorawan", "owntracks", "hermes")
JSON_DECODERS = [n for n in JSON_NAMES if n in DECODERS]


@pytest.mark.parametrize("name", JSON_DECODERS)
@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 20000,  # RecursionError in json.loads
        b'{"object":' * 5000 + b"1" + b"}" * 5000,
        b"1" * 5000,  # int beyond Python's 4300-digit str limit: ValueError, not JSONDecodeError
        b'{"lat": NaN, "lon": 1, "_type": "location", "tst": 1}',
        b'{"lat": 1e999, "lon": 1, "_type": "location"}',
        b'{"tst": ' + b"9" * 400 + b', "lat": 1, "lon": 1, "_type": "location"}',
    ],
    ids=["deep-array", "deep-object", "huge-int", "nan", "inf", "int-overflows-float"],
)
def test_hostile_json_is_a_decode_error(name: str, payload: bytes) -> None:
    profile = profiles_for(name)[0]
    with pytest.raises(DecodeError):
        DECODERS[name](Frame(payload=payload), profile)


def test_owntracks_timestamp_out_of_range_is_dropped_and_named() -> None:
    # Shape from the OwnTracks JSON docs (owntracks.org/booklet/tech/json), with tst far past time_t: the
    # time is a descriptive part (docs/devices/partial-frames.md), left out and named, never a crash.
    profile = profiles_for("owntracks")[0]
    body = {"_type": "location", "lat": 48.85833, "lon": 2.29513, "tst": -(2**62), "acc": 10}
    [event] = DECODERS["owntracks"](Frame(payload=dump(body), meta={"topic": "owntracks/jane/nokia"}), profile)
    assert event.location is not None and event.location.fix_time is None
    assert event.attributes["decode_warnings"] == ["time"]


def test_nmea_garbled_speed_is_a_decode_error() -> None:
    # The RMC sentence of pynmea2's test suite (knadh/pynmea2 test_types.py) with the speed field garbled
    # and no checksum, as a flaky serial line delivers it.
    line = b"$GPRMC,225446,A,4916.45,N,12311.12,W,0x5,054.7,191194,020.3,E"
    with pytest.raises(DecodeError):
        DECODERS["nmea"](Frame(payload=line), profiles_for("nmea")[0])


def test_non_finite_numbers_are_refused_by_every_json_decoder() -> None:
    """Python's json accepts NaN/Infinity; RFC 8259 does not, and a NaN must never reach a Location."""
    for name in JSON_DECODERS:
        for payload in (b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e400}'):
            with pytest.raises(DecodeError):
                DECODERS[name](Frame(payload=payload), profiles_for(name)[0])
