"""GSM and NMEA additions: reply texts with the alert's state, +CIPGSMLOC cell location, NMEA GLL and
stale fixes. End to end on pty pairs (virtual modem and GPS) → serial adapter → reference receiver.

Vectors: pynmea2 test/test_types.py (GLL; the RMC dated 19 Nov 1994), TK-203 manual §5.12 SOS text, the
+CIPGSMLOC layout of the SIM800 AT command manual (coordinates ours).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.core.model import Alert, AlertKind, AlertState, Device, Location, Observation, Person, Severity
from bridge.devices.decoding import Frame
from bridge.devices.profiles import ProfileRegistry
from device_adapters.decoders import gsm_sms, nmea
from device_adapters.serial.sms_reply import reply_text, sms_parts
from simulator.devices.serial import VirtualGps, VirtualGsmModem
from simulator.harness import virtual_serial_ports
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.factories import until

PROFILES = ProfileRegistry.load()
TK203_SOS = (
    "lat: 22.566923 long: 114.051331 speed:85.60 28/10/09 03:33 F:4.32V,0, Signal:F\n"
    "heip me imei:359587011016261 05 41.9"
)
GLL = "$GPGLL,4916.45,N,12311.12,W,225444,A,*1D"
RMC_1994 = "$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*68"
NUMBER = "+447700900123"


@dataclass
class GsmEnv:
    env: BridgeEnv
    modem: VirtualGsmModem
    gps: VirtualGps

    @property
    def handler(self) -> Any:
        adapter = next(a for a in self.env.bridge.runtime.adapters if a.name == "serial")
        return next(h for h in adapter.handlers.values() if type(h).__name__ == "GsmHandler")


@pytest.fixture
async def gsm_env(tmp_path: Path) -> AsyncIterator[GsmEnv]:
    async with (
        virtual_serial_ports(tmp_path, gps_device="gps-1") as (spec, virtual),
        running_bridge(tmp_path, serial_ports=spec, auto_ack_s=0.2) as env,
    ):
        store = env.store
        person = Person(name="Test Person", language="en-GB")
        await store.put_device(Device(device_id="tracker-1", profile_id="coban-tk-sms-tracker", sms_replies=True,
                                      identifiers={"msisdn": NUMBER}, person=person))
        await store.put_device(Device(device_id="tracker-quiet", profile_id="coban-tk-sms-tracker",
                                      identifiers={"msisdn": "+447700900999"}, person=person))
        await store.put_device(Device(device_id="cell-1", profile_id="sim800-diy-sms-tracker",
                                      identifiers={"msisdn": "+447700900789"}, person=person))
        await store.put_device(Device(device_id="gps-1", profile_id="sosbridge-diy-button",
                                      identifiers={"diy_unit": "00C0FFEE"}, person=person))
        gsm = GsmEnv(env, virtual["gsm_modem"], VirtualGps(virtual["serial_ports"]["nmea"]))
        adapter = next(a for a in env.bridge.runtime.adapters if a.name == "serial")
        await until(lambda: all(link.connected.is_set() for link in adapter.links.values()))
        await until(lambda: gsm.handler.ready.is_set())
        yield gsm


async def test_reply_texts_the_state_back_without_logging_the_number(
    gsm_env: GsmEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gsm_env.modem.fail_sends = 1  # the first send fails: retried
    gsm_env.modem.receive_sms(NUMBER, TK203_SOS, "09/10/28,03:33:10+00")
    await gsm_env.env.receiver.first(lambda c: c["device"]["id"] == "tracker-1")
    await until(lambda: (NUMBER, "Help is on the way.") in gsm_env.modem.sent)
    assert (NUMBER, "Your alert has been sent to the police.") in gsm_env.modem.sent
    assert gsm_env.modem.commands.count(f'AT+CMGS="{NUMBER}"') == len(gsm_env.modem.sent) + 1  # one retry
    # A tracker whose record does not allow replies gets none.
    gsm_env.modem.receive_sms("+447700900999", TK203_SOS.replace("03:33", "03:34"), "09/10/28,03:34:10+00")
    await gsm_env.env.receiver.first(lambda c: c["device"]["id"] == "tracker-quiet")
    await asyncio.sleep(0.8)
    assert all(number == NUMBER for number, _ in gsm_env.modem.sent)
    for record in caplog.records:  # logged without the number
        assert "7700900" not in record.getMessage() and "7700900" not in str(record.__dict__)


def test_reply_rules() -> None:
    device = Device(device_id="t", sms_replies=True, identifiers={"msisdn": NUMBER})
    now = datetime.now(UTC)

    def alert(kind: AlertKind, silent: bool = False) -> Alert:
        return Alert(alert_id="a", tenant_id="default", device_id="t", kind=kind, silent=silent,
                     severity=Severity.severe, status="actual", state=AlertState.acknowledged,
                     occurred_at=now, received_at=now, updated_at=now, transport="serial")

    assert reply_text(device, alert(AlertKind.sos), AlertState.acknowledged) == "Help is on the way."
    assert reply_text(device, alert(AlertKind.sos, silent=True), AlertState.acknowledged) is None
    assert reply_text(device, alert(AlertKind.duress), AlertState.acknowledged) is None
    assert reply_text(device, alert(AlertKind.sos), AlertState.received) is None  # "forwarded" follows at once
    assert reply_text(device.model_copy(update={"sms_replies": False}), alert(AlertKind.sos),
                      AlertState.acknowledged) is None
    assert reply_text(device.model_copy(update={"identifiers": {}}), alert(AlertKind.sos),
                      AlertState.acknowledged) is None


async def test_cell_location_when_the_text_has_no_fix(gsm_env: GsmEnv) -> None:
    scts = datetime.now(UTC).strftime("%y/%m/%d,%H:%M:%S+00")
    cell = datetime.now(UTC).strftime("%Y/%m/%d,%H:%M:%S")
    gsm_env.modem.receive_sms("+447700900789", f"SOS\n+CIPGSMLOC: 0,-3.188267,55.953252,{cell}", scts)
    contact = await gsm_env.env.receiver.first(lambda c: c["device"]["id"] == "cell-1")
    loc = contact["location"]
    assert (loc["lat"], loc["lon"]) == pytest.approx((55.953252, -3.188267))  # longitude first on the wire
    assert loc["source"] == "cell" and loc["accuracy_m"] == 1000 and loc["last_known"] is False


async def test_gll_fix_then_a_1994_fix_and_a_2_hour_old_one_never_replace_it(gsm_env: GsmEnv) -> None:
    """Issue 22 item 3: with max_fix_age_s 3600, neither a 1994-dated RMC nor a 2-hour-old GLL becomes the
    device's last location once it has a fresher one (both are still seen: last_seen moves on)."""
    store = gsm_env.env.store

    async def device() -> Device:
        found = await store.get_device("gps-1")
        assert found is not None
        return found

    async def located() -> Location | None:
        return (await device()).last_location

    gsm_env.gps.send("$GPGLL,4916.45,N,12311.12,W,225444,V,*0A")  # void: not a position
    gsm_env.gps.send(nmea_line(f"GPGLL,4916.45,N,12311.12,W,{datetime.now(UTC):%H%M%S},A,"))  # pynmea2's, now
    await until(located)
    fresh = await located()
    assert fresh is not None and fresh.lat == pytest.approx(49.274167) and fresh.last_known is False
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    for line in (RMC_1994, nmea_line(f"GPGLL,5000.00,N,00100.00,W,{two_hours_ago:%H%M%S},A,")):
        seen = (await device()).last_seen
        assert seen is not None
        gsm_env.gps.send(line)

        async def seen_again(before: datetime = seen) -> bool:
            after = (await device()).last_seen
            return after is not None and after > before

        await until(seen_again)
        assert await located() == fresh, line


def nmea_line(body: str) -> str:
    checksum = 0
    for char in body:
        checksum ^= ord(char)
    return f"${body}*{checksum:02X}"


def test_stale_fixes_in_decoders() -> None:
    gps = PROFILES.get("generic-nmea-gps")
    assert gps is not None
    # pynmea2's GLL (22:54:44) arriving just after midnight: the fix is from the day before, 5 min old.
    [gll] = nmea.decode(Frame(payload=GLL.encode(), meta={"received_at": "2026-11-29T22:59:44+00:00",
                                                          "utc_date": "2026-11-29"}), gps)
    assert gll.location is not None and not gll.location.last_known
    [late] = nmea.decode(Frame(payload=GLL.encode(), meta={"received_at": "2026-11-30T00:00:44+00:00",
                                                           "utc_date": "2026-11-30"}), gps)
    assert late.location is not None and late.location.fix_time == datetime(2026, 11, 29, 22, 54, 44, tzinfo=UTC)
    assert late.location.last_known and late.attributes["fix_stale"]  # 66 min old
    received = {"received_at": "2026-11-28T21:00:00+00:00", "utc_date": "2026-11-28"}
    [old] = nmea.decode(Frame(payload=RMC_1994.encode(), meta=received), gps)
    assert old.location is not None and old.location.last_known and old.attributes["fix_stale"]
    assert old.occurred_at is None  # the fix's 1994 is not the event's time
    cell = PROFILES.get("sim800-diy-sms-tracker")
    assert cell is not None
    text = "SOS\n+CIPGSMLOC: 0,-3.188267,55.953252,2026/11/28,08:00:00"  # 13 h before the text was sent
    [sos] = gsm_sms.decode(Frame(payload=text.encode(), meta={"sender": "+1", "scts": "26/11/28,21:00:05+00"}),
                           cell)
    assert sos.kind == AlertKind.sos and sos.location is not None
    assert sos.location.last_known and sos.location.age_s == pytest.approx(13 * 3600 + 5)


def test_sms_parts() -> None:
    assert sms_parts("short") == ["short"]
    parts = sms_parts("x" * 400)
    assert len(parts) == 3 and all(len(p) <= 160 for p in parts)
    assert parts[0].startswith("(1/3) ") and "".join(p.split(") ", 1)[1] for p in parts) == "x" * 400


async def test_platform_messages_are_texted_unless_the_alert_is_silent(gsm_env: GsmEnv) -> None:
    """Issue 16: a platform message is texted to a tracker that allows replies; on a silent alert only when
    the platform asks (audible) and the device record allows it."""
    env = gsm_env.env
    platform = {"Authorization": f"Bearer {env.platform_token}"}
    gsm_env.modem.receive_sms(NUMBER, TK203_SOS, "09/10/28,03:33:10+00")
    contact = await env.receiver.first(lambda c: c["device"]["id"] == "tracker-1")
    long_text = "Officers are on the way to the last position your tracker sent. " * 3
    async with httpx.AsyncClient(base_url=env.url, headers=platform) as c:
        r = await c.post(f"/v1/platform/alerts/{contact['alert_id']}/messages", json={"text": long_text.strip()})
        assert r.status_code == 201, r.text
        await until(lambda: sum(t.startswith("(") for n, t in gsm_env.modem.sent if n == NUMBER) == 2)

        async def recorded() -> bool:
            view = (await c.get(f"/v1/platform/alerts/{contact['alert_id']}")).json()
            return [d["channel"] for d in view["message_deliveries"].get(r.json()["message_id"], [])] == ["sms"]

        await until(recorded)
        # A silent alert from the same tracker: nothing is texted, even when the platform asks...
        await c.post(f"/v1/platform/alerts/{contact['alert_id']}/resolve")
        silent = await env.bridge.runtime.ingress.observations.submit(Observation(
            device_id="tracker-1", transport="gsm", kind=AlertKind.sos, silent=True))
        r = await c.post(f"/v1/platform/alerts/{silent.alert_id}/messages",
                         json={"text": "Are you safe?", "audible": True})
        assert r.status_code == 201 and r.json()["audible"] is False
        await asyncio.sleep(0.8)
        assert all("safe" not in text for _, text in gsm_env.modem.sent)
        # ... unless the device record allows it and the platform asks.
        device = await env.store.get_device("tracker-1")
        await env.store.put_device(device.model_copy(update={"audible_on_silent": True}))
        r = await c.post(f"/v1/platform/alerts/{silent.alert_id}/messages",
                         json={"text": "Reply YES if safe.", "audible": True})
        assert r.json()["audible"] is True
        await until(lambda: (NUMBER, "Reply YES if safe.") in gsm_env.modem.sent)
        assert (NUMBER, "Are you safe?") not in gsm_env.modem.sent


async def test_a_text_from_the_tracker_reaches_the_platform_as_a_message(gsm_env: GsmEnv) -> None:
    """Issue 16: with an open alert, a text from a tracker that allows replies that is not an SOS or status
    frame is the person's message; without an open alert, or from a tracker without replies, it is not."""
    env = gsm_env.env
    gsm_env.modem.receive_sms("+447700900999", "Hello from the quiet one", "09/10/28,03:30:00+00")
    gsm_env.modem.receive_sms(NUMBER, TK203_SOS, "09/10/28,03:33:10+00")
    contact = await env.receiver.first(lambda c: c["device"]["id"] == "tracker-1")
    gsm_env.modem.receive_sms(NUMBER, "I am hiding behind the shed", "09/10/28,03:35:10+00")
    message = await env.receiver.first(lambda c: c["msg_type"] == "message")
    assert message["alert_id"] == contact["alert_id"] and message["seq"] == 2
    assert message["message"]["text"] == "I am hiding behind the shed"
    assert message["message"]["transport"] == "serial"  # the GSM port is a serial transport
    await asyncio.sleep(0.3)
    assert [c["msg_type"] for c in env.receiver.contacts if c["device"]["id"] == "tracker-1"] == ["alert", "message"]
    assert not any(c["device"]["id"] == "tracker-quiet" for c in env.receiver.contacts)
