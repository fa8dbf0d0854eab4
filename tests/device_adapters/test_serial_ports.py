"""Serial devices end to end: virtual devices on pty pairs → serial adapter → pipeline → reference receiver.

Vectors: genuine samples from (pynmea2 README GGA; TK-203
manual §5.12 SOS text; Bulldog Secure FAQ SOS text) and Contact ID (SpanDSP layout and
mod-15 rule; the panic/restore lines are derived with that rule).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.alerts.pipeline import DURESS_CANCEL_REASON
from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import AlertKind, Device, Location, Person
from device_adapters.decoders import diy_frame
from simulator.devices.serial import (
    VirtualAlarmReceiver,
    VirtualDiyButton,
    VirtualGps,
    VirtualGsmModem,
    VirtualSerialPort,
)
from simulator.harness import virtual_serial_ports
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import running_bridge
from tests.support.factories import store_outage, until

TK203_SOS = (
    "lat: 22.566923 long: 114.051331 speed:85.60 28/10/09 03:33 F:4.32V,0, Signal:F\n"
    "heip me imei:359587011016261 05 41.9"
)
BULLDOG_SOS = "SOS,110727 02:48,V,16,23Km/h,61%,,114.082329"
GGA = "$GPGGA,184353.07,1929.045,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000*6D"
HOME = Location(lat=55.9486, lon=-3.1999, accuracy_m=10, source="fixed")


@dataclass
class SerialEnv:
    bridge: EmbeddedBridge
    rx: EmbeddedReceiver
    ports: dict[str, VirtualSerialPort]
    modem: VirtualGsmModem

    @property
    def adapter(self) -> Any:
        return next(a for a in self.bridge.runtime.adapters if a.name == "serial")

    def handler(self, proto: str) -> Any:
        return self.adapter.handlers[str(self.ports[proto].path)]

    def link(self, proto: str) -> Any:
        return self.adapter.links[str(self.ports[proto].path)]

    def rejected(self, reason: str) -> float:
        return self.bridge.runtime.metrics.rejected_count("serial", reason)

    async def contact(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        return await self.rx.first(pred, timeout)


@pytest.fixture
async def serial_env(tmp_path: Path) -> AsyncIterator[SerialEnv]:
    async with (
        virtual_serial_ports(tmp_path, gps_device="button-1") as (spec, virtual),
        running_bridge(tmp_path, serial_ports=spec) as bridge,
    ):
        eb, rx = bridge.bridge, bridge.receiver
        store = eb.runtime.store
        person = Person(name="Test Person", language="en-GB")
        await store.put_device(
            Device(
                device_id="tracker-1",
                profile_id="coban-tk-sms-tracker",
                identifiers={"msisdn": "+447700900123"},
                person=person,
            )
        )
        await store.put_device(
            Device(
                device_id="bulldog-1",
                profile_id="bulldog-secure-sms-tracker",
                identifiers={"msisdn": "+447700900456"},
                person=person,
                registered_address=HOME,
            )
        )
        await store.put_device(
            Device(
                device_id="button-1",
                profile_id="sosbridge-diy-button",
                identifiers={"diy_unit": "00C0FFEE"},
                person=person,
            )
        )
        await store.put_device(
            Device(
                device_id="premises-1",
                profile_id="ademco-contact-id-receiver",
                identifiers={"contact_id": "1234"},
                person=person,
                registered_address=HOME,
            )
        )
        env = SerialEnv(eb, rx, virtual["serial_ports"], virtual["gsm_modem"])
        await until(lambda: all(link.connected.is_set() for link in env.adapter.links.values()))
        await until(lambda: env.handler("gsm").ready.is_set())
        yield env


async def test_gps_fix_locates_the_diy_buttons_alert(serial_env: SerialEnv) -> None:
    env = serial_env
    VirtualGps(env.ports["nmea"]).send("$GPGGA,201716.684,,,,,0,00,,,M,0.0,M,,0000*5F")  # no fix: ignored
    VirtualGps(env.ports["nmea"]).send(GGA)
    store = env.bridge.runtime.store

    async def located() -> bool:
        dev = await store.get_device("button-1")
        return dev is not None and dev.last_location is not None

    await until(located)
    dev = await store.get_device("button-1")
    assert dev.last_location.lat == pytest.approx(-19.48408, abs=1e-4)
    assert dev.last_location.accuracy_m == pytest.approx(26.0)

    button = VirtualDiyButton(env.ports["diy"], unit=0xC0FFEE, boot=3)
    answer = await button.press(AlertKind.sos)
    assert answer == diy_frame.ack(button.seq)  # 06 + SEQ, only after storage
    contact = await env.contact(lambda c: c["device"]["id"] == "button-1")
    assert contact["kind"] == "sos"
    loc = contact["location"]
    assert loc["last_known"] is True and loc["lat"] == pytest.approx(-19.48408, abs=1e-4)
    assert loc["accuracy_m"] == pytest.approx(26.0)

    # The same frame again (the ACK was lost) is absorbed, and still acknowledged.
    again = await button.send_until_answered(diy_frame.encode_alert(0xC0FFEE, 3, button.seq, AlertKind.sos))
    assert again == diy_frame.ack(button.seq)


async def test_diy_bad_crc_refused_and_counted_unknown_unit_nak(serial_env: SerialEnv) -> None:
    env = serial_env
    before = env.rejected("bad_checksum")
    raw = bytearray(diy_frame.encode_alert(0xC0FFEE, 1, 1, AlertKind.panic))
    raw[-1] ^= 0xFF
    env.ports["diy"].write(bytes(raw))
    await until(lambda: env.rejected("bad_checksum") == before + 1)
    with pytest.raises(TimeoutError):
        await env.ports["diy"].read(timeout=0.3)  # no answer to a corrupted frame
    stranger = VirtualDiyButton(env.ports["diy"], unit=0xBAD)
    answer = await stranger.press(AlertKind.panic)
    assert answer == diy_frame.nak(stranger.seq, diy_frame.NAK_UNKNOWN_DEVICE)
    assert not [c for c in env.rx.contacts if c["kind"] == "panic"]


async def test_contact_id_panic_restore_and_bad_checksum(serial_env: SerialEnv) -> None:
    env = serial_env
    panel = VirtualAlarmReceiver(env.ports["contactid"])
    panel.event("1234", "1", "122", zone="015")  # silent panic (hold-up)
    assert await panel.reply() == b"\x06"
    contact = await env.contact(lambda c: c["device"]["id"] == "premises-1")
    assert contact["kind"] == "panic" and contact["silent"] is True
    assert contact["location"]["source"] == "registered_address"
    assert contact["attributes"]["zone"] == "015"

    panel.event("1234", "3", "122", zone="015")  # restore: an update, not a stand-down
    assert await panel.reply() == b"\x06"
    update = await env.contact(lambda c: c["device"]["id"] == "premises-1" and c["msg_type"] == "update")
    assert update["alert_id"] == contact["alert_id"] and "restore" in (update["reason"] or "")

    before = env.rejected("bad_checksum")
    panel.send("1234 18 1 120 01 015 1")  # checksum should be F
    assert await panel.reply() == b"\x15"
    assert env.rejected("bad_checksum") == before + 1

    # User cancel (406) of a silent panic: keyed at the panel, perhaps under coercion, so it is held
    # (docs/voice/duress.md): the platform gets an update, the alert stays open, no stand-down.
    panel.event("1234", "1", "406", zone="003")
    assert await panel.reply() == b"\x06"
    held = await env.contact(
        lambda c: c["device"]["id"] == "premises-1" and DURESS_CANCEL_REASON in (c["reason"] or "")
    )
    assert held["msg_type"] == "update" and held["alert_id"] == contact["alert_id"]
    assert not any(c["msg_type"] == "cancel" for c in env.rx.contacts)


async def test_gsm_tracker_sms_stored_then_deleted(serial_env: SerialEnv) -> None:
    env = serial_env
    idx = env.modem.receive_sms("+447700900123", TK203_SOS, "09/10/28,03:33:10+00")
    contact = await env.contact(lambda c: c["device"]["id"] == "tracker-1")
    assert contact["kind"] == "sos"
    assert contact["location"]["lat"] == pytest.approx(22.566923)
    assert contact["location"]["lon"] == pytest.approx(114.051331)
    assert contact["attributes"]["imei"] == "359587011016261"
    await until(lambda: idx not in env.modem.storage)
    assert f"AT+CMGR={idx}" in env.modem.commands and f"AT+CMGD={idx}" in env.modem.commands
    assert env.modem.text_mode

    # Bulldog: GPS flag V, so no current fix: the registered address stands in.
    env.modem.receive_sms("07700900456", BULLDOG_SOS, "11/07/27,02:48:30+04")  # national number, cc=44
    bulldog = await env.contact(lambda c: c["device"]["id"] == "bulldog-1")
    assert bulldog["kind"] == "sos" and bulldog["location"]["source"] == "registered_address"

    # A text from an unknown number is refused, counted, and deleted so the SIM does not fill up.
    before = env.rejected("unknown_device")
    stranger = env.modem.receive_sms("+447700900999", "help me!")
    await until(lambda: stranger not in env.modem.storage)
    assert env.rejected("unknown_device") == before + 1


async def test_unplug_and_replug_is_survived(serial_env: SerialEnv) -> None:
    env = serial_env
    # DIY: pull the cable, plug it back in under the same path.
    env.ports["diy"].unplug()
    await until(lambda: not env.link("diy").connected.is_set())
    env.ports["diy"].plug()
    await until(lambda: env.link("diy").connections >= 2 and env.link("diy").connected.is_set())
    button = VirtualDiyButton(env.ports["diy"], unit=0xC0FFEE, boot=4)
    assert await button.press(AlertKind.fall) == diy_frame.ack(button.seq)
    await env.contact(lambda c: c["device"]["id"] == "button-1" and c["kind"] == "fall")

    # GSM: a text that arrives while the modem is unplugged waits on the SIM and is read on reconnect.
    env.ports["gsm"].unplug()
    await until(lambda: not env.link("gsm").connected.is_set())
    idx = env.modem.receive_sms("+447700900123", TK203_SOS, "09/10/28,03:36:10+00")
    env.ports["gsm"].plug()
    await env.contact(lambda c: c["device"]["id"] == "tracker-1")
    await until(lambda: idx not in env.modem.storage)
    assert env.link("gsm").connections >= 2


async def test_sms_read_during_a_store_outage_stays_on_the_sim_and_is_stored_after(serial_env: SerialEnv) -> None:
    """Issue 14 item 3: with the store down while an SMS was read, the port's task ended for good. Now the
    text stays on the SIM (no AT+CMGD), the reader keeps serving, and the text is read again and stored
    once the store is back, with no replug."""
    env = serial_env
    with store_outage(env.bridge.runtime.store):
        idx = env.modem.receive_sms("+447700900123", TK203_SOS, "09/10/28,03:33:10+00")
        await until(lambda: env.modem.commands.count(f"AT+CMGR={idx}") >= 2)  # read, refused, read again
        assert f"AT+CMGD={idx}" not in env.modem.commands and idx in env.modem.storage
        assert not [c for c in env.rx.contacts if c["device"]["id"] == "tracker-1"]
    contact = await env.contact(lambda c: c["device"]["id"] == "tracker-1", timeout=20)
    assert contact["kind"] == "sos"
    await until(lambda: idx not in env.modem.storage, timeout=20)
    assert all(link.connected.is_set() for link in env.adapter.links.values())
