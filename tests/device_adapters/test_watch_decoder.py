"""The watch protocol's pure parts: framing over a byte stream, escapes, and a fuzzed decoder.

The in-suite fuzz keeps to ~2,000 examples; bench/fuzz.py runs >= 100,000 cases per decoder
(with the watch frames re-framed after mutation, so mutated contents get past the length check).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.devices.decoding import Decoded, DecodeError, Frame
from bridge.devices.profiles import ProfileRegistry
from device_adapters.decoders import watch
from tests.support.paths import FIXTURES

PROFILE = ProfileRegistry.load().get("watch-3g-protocol")
assert PROFILE is not None
TRACCAR = [
    line.strip().encode()
    for line in (FIXTURES / "watch" / "traccar-frames.txt").read_text().splitlines()
    if line
]
contents = st.binary(min_size=0, max_size=60)


@given(st.lists(contents, min_size=1, max_size=5), st.data())
@settings(max_examples=300, deadline=None)
def test_frames_survive_any_split_of_the_stream(payloads: list[bytes], data: st.DataObject) -> None:
    frames = [watch.build_frame("3G", "1234567890", p, binary=True) for p in payloads]
    stream = b"noise" + b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    got: list[bytes] = []
    buffer = b""
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buffer += stream[a:b]
        found, buffer, _ = watch.split_frames(buffer)
        got += found
    assert got == frames
    assert [watch.parse_frame(f).content for f in got] == payloads  # escapes undone, lengths hold


def test_index_field_and_reply() -> None:
    frame = watch.parse_frame(b"[ZJ*014111001332708*0075*0064*AL,040418,052156,A,22.536207,N,113.938673,E,0,0,0,5,"
                              b"100,82,1000,50,00100000,1,255,460,0,9340,3663,35]")
    assert (frame.index, frame.type) == ("0075", "AL")
    assert watch.reply(frame, "AL") == b"[ZJ*014111001332708*0075*0002*AL]"
    assert watch.message_command(frame, "OK") == b"[ZJ*014111001332708*0075*0010*MESSAGE,004F004B]"


def test_hemispheres_and_signs_as_traccar_reads_them() -> None:
    # UD2 with "-33.480366,N,-70.7630692,E": Traccar's test expects -33.48037, -70.76307.
    doc = watch.parse_content(watch.parse_frame(TRACCAR[11], strict=False))
    assert (doc["lat"], doc["lon"]) == (-33.480366, -70.7630692) and doc["fix_valid"] is False
    doc = watch.parse_content(watch.parse_frame(TRACCAR[3], strict=False))  # 081.53128,W
    assert doc["lon"] == -81.53128


@given(st.sampled_from(TRACCAR), st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=4)), max_size=4),
       st.booleans())
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decoder_never_crashes(seed: bytes, edits: list[tuple[int, bytes]], reframe: bool) -> None:
    data = bytearray(seed)
    for pos, insert in edits:
        pos = min(pos, len(data))
        data[pos : pos + len(insert)] = insert
    raw = bytes(data)
    if reframe:
        try:
            parsed = watch.parse_frame(raw, strict=False)
            raw = watch.build_frame(parsed.manufacturer, parsed.watch_id, parsed.content, parsed.index)
        except DecodeError:
            pass
    try:
        events = watch.decode(Frame(payload=raw, meta={"protocol": "watch",
                                                       "received_at": "2026-01-01T00:00:00+00:00"}), PROFILE)
    except DecodeError:
        return
    assert isinstance(events, list) and all(isinstance(e, Decoded) for e in events)
