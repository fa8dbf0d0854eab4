"""DC-09 pure parts: framing, AES for every key size, the timestamp window, and a fuzzed decoder.

~2,000 examples here; bench/fuzz.py runs >= 100,000 cases per decoder and re-frames mutated DC-09
messages (valid CRC and length) so mutations reach the parser behind the checks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.devices.decoding import Decoded, DecodeError, Frame
from bridge.devices.profiles import ProfileRegistry
from device_adapters.decoders import dc09
from simulator.devices.dc09 import VirtualPanel

PROFILE = ProfileRegistry.load().get("dc09-alarm-panel")
assert PROFILE is not None
SEEDS = [s.frame().payload for s in PROFILE.samples]
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("key", ["AAAAAAAAAAAAAAAA", "B" * 24, "C" * 32, "hex:" + "0f" * 16, "hex:" + "1e" * 24,
                                 "hex:" + "2d" * 32])
def test_encrypted_messages_open_with_their_key_only(key: str) -> None:
    panel = VirtualPanel("h", 0, "1234", key)
    body = dc09.check_frame(panel.sia("PA", "501", when=NOW))
    message = dc09.open_message(body, dc09.parse_key(key))
    assert (message.data, message.timestamp) == ("Nri1/PA501", NOW)
    with pytest.raises(dc09.KeyRefused):
        dc09.open_message(body, dc09.parse_key("hex:" + "ff" * 16))
    with pytest.raises(dc09.KeyRefused):
        dc09.open_message(body, None)


def test_window_is_minus_40_plus_20_seconds() -> None:
    message = dc09.Message("SIA-DCS", False, "0001", "", "L0", "1234", "", "", NOW, "")
    for offset in (-40, 0, 20):
        dc09.check_window(message, NOW - timedelta(seconds=offset))
    for offset in (-41, 21):  # 41 s behind, 21 s ahead
        with pytest.raises(dc09.StaleError):
            dc09.check_window(message, NOW - timedelta(seconds=offset))


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80), st.data())
@settings(max_examples=300, deadline=None)
def test_any_framed_block_passes_the_checks_and_a_changed_byte_does_not(body: str, data: st.DataObject) -> None:
    raw = dc09.frame_body('"SIA-DCS"' + body)
    assert dc09.check_frame(raw) == '"SIA-DCS"' + body
    frames, rest = dc09.split_frames(raw[:3] + raw[3:] + raw)
    assert frames == [raw, raw] and rest == b""
    pos = data.draw(st.integers(1, len(raw) - 2))
    changed = bytearray(raw)
    changed[pos] = data.draw(st.integers(32, 126).filter(lambda b: chr(b).lower() != chr(raw[pos]).lower()))
    with pytest.raises(DecodeError):
        dc09.check_frame(bytes(changed))


@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 120), st.binary(max_size=4)), max_size=4))
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decoder_never_crashes(seed: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(seed)
    for pos, insert in edits:
        pos = min(pos, len(data))
        data[pos : pos + len(insert)] = insert
    try:
        events = dc09.decode(Frame(payload=bytes(data), meta={"protocol": "dc09"}), PROFILE)
    except DecodeError:
        return
    assert isinstance(events, list) and all(isinstance(e, Decoded) for e in events)
