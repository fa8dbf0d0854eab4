"""4G SOS watches end to end: real TCP on 127.0.0.1 → watch transport → ingress → reference receiver.

Vectors: every frame in tests/fixtures/watch/traccar-frames.txt (copied from Traccar's
WatchProtocolDecoderTest.java, see SOURCES.md there), sent over real sockets; for each, the answer on
the wire, and contact or no contact with its kind, location and fix validity.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.core.model import Device, Location, Person
from device_adapters.decoders import watch
from simulator.devices.watch import VirtualWatch, position_content
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.factories import store_outage, until
from tests.support.paths import FIXTURES
from tests.support.ports import free_port

FIXTURES = FIXTURES / "watch"
TRACCAR = [line.strip().encode() for line in (FIXTURES / "traccar-frames.txt").read_text().splitlines() if line]
HOME = Location(lat=55.9486, lon=-3.1999, accuracy_m=10, source="fixed")
LAST = Location(lat=55.9601, lon=-3.1880, accuracy_m=15, source="gnss", fix_time=datetime.now(UTC))

# watch id + frame type -> (answer type or None, contact kind or None, coordinates or None)
EXPECTED: dict[tuple[str, str], tuple[str | None, str | None, tuple[float, float] | None]] = {
    ("9031853319", "UD2"): (None, None, None),
    ("2104326058", "btemp2"): (None, None, None),
    ("9159059735", "UD2"): (None, None, None),
    ("9059056143", "UD"): (None, None, None),
    ("358839237678820", "ALCUSTOMER1"): ("AL", "device_removed", None),
    ("8809008845", "AL"): ("AL", "sos", None),
    ("014111001332708", "AL"): ("AL", "device_removed", (22.536207, 113.938673)),
    ("8308373902", "AL"): ("AL", "fall", (47.08395, 15.482185)),
    ("9051004074", "AL"): ("AL", "sos", None),
    ("4700609403", "bphrt"): (None, None, None),
    ("357653059860416", "BLOOD"): (None, None, None),
    ("6105117105", "UD2"): (None, None, None),
    ("9081000548", "LK"): ("LK", None, None),
    ("8800000015", "TKQ"): ("TKQ", None, None),
    ("8800000015", "LK"): ("LK", None, None),
    ("4700186508", "LK"): ("LK", None, None),
    ("8800000015", "UD"): (None, None, None),
    ("8800000015", "AL"): ("AL", "low_battery", (22.571707, 113.8613968)),
    ("8800000015", "PULSE"): (None, None, None),
    ("2256002206", "UD2"): (None, None, None),
    ("9051000884", "UD"): (None, None, None),
}


@dataclass
class WatchEnv:
    env: BridgeEnv
    port: int

    @property
    def metrics(self) -> Any:
        return self.env.bridge.runtime.metrics

    def rejected(self, reason: str) -> float:
        return float(self.metrics.rejected_count("watch", reason))

    def watch(self, watch_id: str, manufacturer: str = "3G") -> VirtualWatch:
        return VirtualWatch("127.0.0.1", self.port, watch_id, manufacturer)

    async def register(self, device_id: str, watch_id: str, **fields: Any) -> None:
        await self.env.store.put_device(Device(
            device_id=device_id, profile_id="watch-3g-protocol", identifiers={"watch": watch_id},
            person=Person(name="Test Wearer", language="en-GB"), **fields))


@pytest.fixture
async def watch_env(tmp_path: Path) -> AsyncIterator[WatchEnv]:
    port = free_port()
    async with running_bridge(tmp_path, watch_port=port, watch_idle_s=2.0) as env:
        yield WatchEnv(env, port)



async def no_answer(device: VirtualWatch, type_: str, wait: float = 0.5) -> bool:
    with contextlib.suppress(TimeoutError):
        await device.expect(type_, wait)
        return False
    return True


async def test_traccar_frames_through_the_listener(watch_env: WatchEnv) -> None:
    ids = {watch.parse_frame(raw, strict=False).watch_id for raw in TRACCAR}
    for watch_id in ids:
        extra: dict[str, Any] = {"registered_address": HOME}
        if watch_id == "8809008845":
            extra["last_location"], extra["last_seen"] = LAST, datetime.now(UTC)
        await watch_env.register(f"w-{watch_id}", watch_id, **extra)
    rx = watch_env.env.receiver
    devices: dict[str, VirtualWatch] = {}
    for raw in TRACCAR:
        frame = watch.parse_frame(raw, strict=False)
        answer_type, kind, coords = EXPECTED[(frame.watch_id, frame.type)]
        device = devices.setdefault(frame.watch_id, watch_env.watch(frame.watch_id, frame.manufacturer))
        before = len(rx.contacts)
        await device.send_raw(raw)
        if answer_type is None:
            assert await no_answer(device, answer_type or frame.type, 0.2), raw[:40]
            assert len(rx.contacts) == before, f"no contact expected for {raw[:40]!r}"
            continue
        reply = await device.expect(answer_type, 5.0)
        assert reply is not None and reply.manufacturer == frame.manufacturer and reply.index == frame.index
        assert reply.content == answer_type.encode()
        if kind is None:
            continue
        contact = await rx.first(lambda c, d=f"w-{frame.watch_id}", k=kind: c["device"]["id"] == d
                                 and c["kind"] == k, 10)
        loc = contact["location"]
        if coords is not None:
            assert (loc["lat"], loc["lon"]) == pytest.approx(coords, abs=1e-5)
            assert contact["attributes"]["fix_valid"] is True
            # Traccar's frames are years old: a valid fix that old is last known, with its age, not current.
            assert loc["last_known"] is True and loc["age_s"] > 3600 and contact["attributes"]["fix_stale"]
        elif frame.watch_id == "8809008845":
            # AL with a V fix: the alert is raised, the fix flagged invalid, the last known position used.
            assert contact["attributes"]["fix_valid"] is False
            assert loc["last_known"] is True and loc["lat"] == pytest.approx(LAST.lat)
        else:
            assert contact["attributes"]["fix_valid"] is False
            assert loc["source"] == "registered_address"
    # Valid UD fixes moved the last known position; invalid ones did not.
    moved = await watch_env.env.store.get_device("w-9059056143")
    assert moved is not None and moved.last_location is not None
    assert (moved.last_location.lat, moved.last_location.lon) == pytest.approx((41.465, -81.53128))
    still = await watch_env.env.store.get_device("w-9051000884")
    assert still is not None and still.last_location is None
    checked_in = await watch_env.env.store.get_device("w-4700186508")
    assert checked_in is not None and checked_in.last_seen is not None  # LK is a check-in
    for device in devices.values():
        await device.close()


async def test_no_al_answer_while_the_store_fails(watch_env: WatchEnv) -> None:
    await watch_env.register("w-1", "1234567890", registered_address=HOME)
    device = watch_env.watch("1234567890")
    store = watch_env.env.store
    when = datetime.now(UTC)
    with store_outage(store):
        await device.send_raw(device.frame(position_content("AL", status=1 << 16, when=when)))
        assert await no_answer(device, "AL", 0.8)  # nothing stored: no AL on the wire
    assert not watch_env.env.receiver.contacts
    # The watch repeats the same alarm; now it is stored and answered, and reaches the police once.
    assert await device.alarm("sos", when=when) is not None
    contact = await watch_env.env.receiver.first(lambda c: c["device"]["id"] == "w-1")
    assert contact["kind"] == "sos" and contact["attributes"]["fix_valid"] is True
    assert contact["location"]["source"] == "gnss" and contact["location"]["last_known"] is False  # current fix
    assert await device.alarm("sos", when=when) is not None  # a retransmission: deduplicated, answered
    await asyncio.sleep(0.3)
    assert len([c for c in watch_env.env.receiver.contacts if c["msg_type"] == "alert"]) == 1
    await device.close()


async def test_split_joined_and_bad_frames_on_one_connection(watch_env: WatchEnv) -> None:
    await watch_env.register("w-2", "2222222222")
    device = watch_env.watch("2222222222", "SG")
    link = device.frame(b"LK,0,0,90")
    await device.send_raw(link[:7])  # one frame split across two TCP writes
    await asyncio.sleep(0.05)
    await device.send_raw(link[7:])
    assert await device.expect("LK") is not None
    await device.send_raw(link + link)  # two frames in one write
    assert await device.expect("LK") is not None and await device.expect("LK") is not None
    malformed = watch_env.rejected("malformed")
    await device.send_raw(b"[SG*2222222222*ZZZZ*LK]")  # bad length field: refused, counted ...
    await device.send_raw(b"[SG*2222222222*0010*AL,1,2]")  # bad length, content not a report: bad_length
    assert await device.link() is not None  # ... and the connection stays up
    assert watch_env.rejected("malformed") == malformed + 1
    assert watch_env.rejected("bad_length") == 1
    too_large = watch_env.rejected("too_large")
    await device.send_raw(b"[SG*2222222222*FFFF*" + b"x" * (watch.MAX_FRAME + 10))  # no end: over the cap
    await asyncio.sleep(0.2)
    assert watch_env.rejected("too_large") == too_large + 1
    assert await device.link() is not None
    await device.close()


async def test_unknown_watch_alarm_refused_counted_and_unanswered(watch_env: WatchEnv) -> None:
    stranger = watch_env.watch("9999999999")
    await stranger.send_raw(stranger.frame(position_content("AL", status=1 << 16)))
    assert await no_answer(stranger, "AL", 1.0)  # not stored: no AL, the watch calls its SOS numbers
    assert watch_env.rejected("unknown_device") == 1
    assert not watch_env.env.receiver.contacts


async def test_idle_connection_is_closed(watch_env: WatchEnv) -> None:
    await watch_env.register("w-3", "3333333333")
    device = watch_env.watch("3333333333")
    assert await device.link() is not None
    assert await device.expect("never", 5.0) is None  # closed after watch_idle_s (2 s) of silence


async def test_status_shown_on_the_watch_and_fall_after_replug(watch_env: WatchEnv) -> None:
    await watch_env.register("w-4", "4444444444", registered_address=HOME)
    device = watch_env.watch("4444444444")
    assert await device.alarm("sos") is not None
    await device.wait_message("Help is on the way.")  # the receiver acknowledges; the watch shows it
    await device.replug()  # battery out and in: a new connection
    assert await device.alarm("fall", when=datetime.now(UTC) + timedelta(seconds=1)) is not None
    # A fall while the SOS is open escalates that alert: an update contact, not a second alert.
    update = await watch_env.env.receiver.first(lambda c: c["device"]["id"] == "w-4" and c["msg_type"] == "update")
    assert "fall" in str(update)
    await device.close()


async def test_alarm_without_a_fix_asks_the_watch_to_locate_itself(watch_env: WatchEnv) -> None:
    await watch_env.register("w-6", "6666666666", registered_address=HOME)
    device = watch_env.watch("6666666666")
    assert await device.alarm("sos", valid=False, lat=0.0, lon=0.0) is not None
    assert await device.expect("CR") is not None  # "locate now"
    await device.position(lat=55.9601, lon=-3.1880)  # the watch answers with a fresh UD fix ...
    update = await watch_env.env.receiver.first(lambda c: c["device"]["id"] == "w-6" and c["msg_type"] == "update")
    assert update["location"]["lat"] == pytest.approx(55.9601)  # ... which moves the open alert
    assert await device.alarm("sos", when=datetime.now(UTC) + timedelta(seconds=2)) is not None
    assert await no_answer(device, "CR", 0.3)  # with a valid fix: no CR
    await device.close()


async def test_stale_fix_is_last_known_with_its_age(watch_env: WatchEnv) -> None:
    await watch_env.register("w-5", "5555555555")
    device = watch_env.watch("5555555555")
    old = datetime(2000, 1, 6, 12, 0, tzinfo=UTC)  # a watch whose clock never set itself
    assert await device.alarm("sos", when=old, lat=57.1, lon=-2.1) is not None
    contact = await watch_env.env.receiver.first(lambda c: c["device"]["id"] == "w-5")
    loc = contact["location"]
    assert loc["last_known"] is True and loc["age_s"] > 3600 * 24 * 365
    assert contact["attributes"]["fix_stale"] is True
    assert contact["occurred_at"][:4] != "2000"  # the frame's clock is not the alert's time
    await device.close()


async def test_start_up_summary_names_the_listener(watch_env: WatchEnv) -> None:
    from bridge.app.startup import summary_lines

    lines = await summary_lines(watch_env.env.bridge.runtime)
    assert f"watch      127.0.0.1:{watch_env.port} TCP" in lines
    assert "DC-09      off" in lines


# -- framing by the declared length; partial frames (docs/transports/watch.md) ------------------------------
SSIDS = [b"]", b"a]b", b"[x]", b"*]*", b"}", b"Cafe] [Free", b"]]"]


def _wifi_alarm(ssid: bytes, when: datetime) -> bytes:
    """An SOS alarm whose Wi-Fi list names `ssid` (free text: the one field a `]` can hide in)."""
    return position_content("AL", status=1 << 16, when=when) + b",2," + ssid + b",aa:bb:cc:dd:ee:01,-60,x" + ssid + \
        b",aa:bb:cc:dd:ee:02,-71"


async def test_a_bracket_inside_a_wifi_name_never_splits_a_frame(watch_env: WatchEnv) -> None:
    await watch_env.register("w-7", "7777777777", registered_address=HOME)
    device = watch_env.watch("7777777777")
    rx = watch_env.env.receiver
    start = datetime.now(UTC)
    malformed = watch_env.rejected("malformed")
    for n, ssid in enumerate(SSIDS):
        frame = device.frame(_wifi_alarm(ssid, start + timedelta(seconds=3 * n)))
        inner = frame.index(ssid)
        cuts = [(frame,), (frame[: inner + 1], frame[inner + 1 :]), (frame + device.frame(b"LK,0,0,90"),)]
        for m, writes in enumerate(cuts):
            if m:  # a new alarm each time, so none is a duplicate of the last
                frame = device.frame(_wifi_alarm(ssid, start + timedelta(seconds=3 * n + m)))
                writes = (frame[: inner + 1], frame[inner + 1 :]) if m == 1 else (frame + device.frame(b"LK,0,0,90"),)
            for part in writes:
                await device.send_raw(part)
                await asyncio.sleep(0.05)  # each write its own TCP segment
            assert await device.expect("AL", 5.0) is not None, (ssid, m)
            if m == 2:
                assert await device.expect("LK", 5.0) is not None
    assert watch_env.rejected("malformed") == malformed  # not one frame was cut at an inner `]`
    await until(lambda: any(c["device"]["id"] == "w-7" for c in rx.contacts))
    assert all(c["kind"] == "sos" for c in rx.contacts if c["device"]["id"] == "w-7")
    await device.close()


async def test_length_off_by_three_with_a_bracket_in_a_field(watch_env: WatchEnv) -> None:
    """SG firmwares declare 3 bytes short: framed at the `]` the next frame follows, never the inner one."""
    await watch_env.register("w-8", "8888888888", registered_address=HOME)
    device = watch_env.watch("8888888888", "SG")
    content = _wifi_alarm(b"a]b", datetime.now(UTC))
    short = b"[SG*8888888888*" + f"{len(content) - 3:04X}".encode() + b"*" + content + b"]"
    await device.send_raw(short + device.frame(b"LK,0,0,90"))
    assert await device.expect("AL", 5.0) is not None and await device.expect("LK", 5.0) is not None
    await device.send_raw(short)  # alone (a repeat): framed at its `]` once the watch pauses
    assert await device.expect("AL", 5.0) is not None
    await device.close()


async def test_lte_sos_with_a_void_fix_and_empty_coordinates_is_raised_and_answered(watch_env: WatchEnv) -> None:
    await watch_env.register("w-9", "9090909090", registered_address=HOME, last_location=LAST,
                             last_seen=datetime.now(UTC))
    device = watch_env.watch("9090909090")
    rx = watch_env.env.receiver
    when = datetime.now(UTC).strftime("%d%m%y,%H%M%S").encode()
    await device.send_raw(device.frame(b"AL_LTE," + when + b",V,,,,,0.00,0.0,0.0,0,100,81,0,0,00010000,1,255,460,0"))
    assert await device.expect("AL", 5.0) is not None  # answered once stored: the watch stops repeating
    contact = await rx.first(lambda c: c["device"]["id"] == "w-9")
    assert contact["kind"] == "sos" and contact["location"]["last_known"] is True
    assert contact["decode_warnings"] == []  # a void fix with empty fields is no fix, not damage
    partial = watch_env.metrics.partial_count("watch-3g-protocol")
    later = (datetime.now(UTC) + timedelta(seconds=5)).strftime("%d%m%y,%H%M%S").encode()
    await device.send_raw(device.frame(b"AL_WCDMA," + later + b",A,55.9x,Q,-3.18,E,0,0,0,0,100,x,0,0,00210000"))
    assert await device.expect("AL", 5.0) is not None
    update = await rx.first(lambda c: c["device"]["id"] == "w-9" and c["msg_type"] == "update")
    assert update["decode_warnings"] == ["battery_pct", "location"]
    assert update["location"]["lat"] == pytest.approx(LAST.lat)  # last known, marked so
    assert watch_env.metrics.partial_count("watch-3g-protocol") == partial + 1
    await device.close()
