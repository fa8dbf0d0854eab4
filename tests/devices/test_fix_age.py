"""One fix-age rule for every decoder (issue 22 item 3; docs/devices/fix-age.md).

A table per decoder: each row is a frame with a pinned arrival time (`meta.received_at`), decoded the way
the ingress decodes every frame (`decode_frame`: the profile's decoder, then `fixage.judge`), and what must
come out: the fix live or last known (with its age), the event's time kept or dropped. Then the rule that
a stale fix never replaces a fresher last location, and one end to end: OwnTracks over HTTP with a 2017 fix.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bridge.core.model import Location
from bridge.devices.decoding import Frame, decode_frame
from bridge.devices.fixage import judge, replaces_last_location
from bridge.devices.frames import Decoded
from bridge.devices.profiles import DeviceProfile, ProfileRegistry
from tests.support.bridges import BridgeEnv, running_bridge

PROFILES = ProfileRegistry.load()
NOW = datetime(2026, 11, 28, 21, 0, 0, tzinfo=UTC)
YEAR = 365 * 86400


def profile(profile_id: str) -> DeviceProfile:
    found = PROFILES.get(profile_id)
    assert found is not None, profile_id
    return found


@dataclass(frozen=True)
class Row:
    name: str
    profile: str
    payload: str
    meta: dict[str, str]
    last_known: bool
    min_age_s: float | None = None  # None with last_known: the age is unknown (a fix "from the future")
    keeps_time: bool | None = True  # kept as the event's time; False: dropped; None: the frame has no time


def nmea(body: str) -> str:
    checksum = 0
    for char in body:
        checksum ^= ord(char)
    return f"${body}*{checksum:02X}"


def owntracks(tst: int, trigger: str | None = None) -> str:
    doc = {"_type": "location", "lat": 48.85833, "lon": 2.29513, "tst": tst, "tid": "JJ"}
    if trigger:
        doc["t"] = trigger
    return json.dumps(doc)


def at(when: datetime) -> dict[str, str]:
    return {"received_at": when.isoformat()}


ROWS = [
    # OwnTracks over MQTT and over HTTP: fixes from 2017 and 2024 (the frames) are last known.
    *[Row(f"{pid} {year}", pid, owntracks(int(datetime(year, 6, 1, tzinfo=UTC).timestamp()), "u"), at(NOW),
          last_known=True, min_age_s=(NOW - datetime(year, 6, 1, tzinfo=UTC)).total_seconds(), keeps_time=False)
      for pid in ("owntracks-phone", "owntracks-phone-http") for year in (2017, 2024)],
    *[Row(f"{pid} live", pid, owntracks(int((NOW - timedelta(seconds=30)).timestamp()), "u"), at(NOW),
          last_known=False) for pid in ("owntracks-phone", "owntracks-phone-http")],
    Row("owntracks 10 min ahead", "owntracks-phone", owntracks(int((NOW + timedelta(minutes=10)).timestamp()), "u"),
        at(NOW), last_known=True, min_age_s=None, keeps_time=False),
    # NMEA: a 1994-dated RMC, a 2-hour-old GLL with max_fix_age_s 3600, a current GGA.
    Row("nmea RMC 1994", "generic-nmea-gps",
        "$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*68", at(NOW),
        last_known=True, min_age_s=31 * YEAR, keeps_time=False),
    Row("nmea GLL 2 h old", "generic-nmea-gps", nmea("GPGLL,4916.45,N,12311.12,W,190000,A,"),
        {**at(NOW), "utc_date": "2026-11-28"}, last_known=True, min_age_s=7200, keeps_time=False),
    Row("nmea GGA now", "generic-nmea-gps",
        nmea("GPGGA,205950,4916.45,N,12311.12,W,1,08,0.9,545.4,M,46.9,M,,"),
        {**at(NOW), "utc_date": "2026-11-28"}, last_known=False),
    # GSM: a cell fix (+CIPGSMLOC) 13 hours old, and one a minute old.
    Row("gsm cell 13 h", "sim800-diy-sms-tracker", "SOS\n+CIPGSMLOC: 0,-3.188267,55.953252,2026/11/28,08:00:00",
        {"sender": "+1", **at(NOW)}, last_known=True, min_age_s=13 * 3600, keeps_time=None),
    Row("gsm cell now", "sim800-diy-sms-tracker", "SOS\n+CIPGSMLOC: 0,-3.188267,55.953252,2026/11/28,20:59:00",
        {"sender": "+1", **at(NOW)}, last_known=False, keeps_time=None),
    # The watch protocol: an alarm whose fix is dated 2016, and one from a minute ago.
    *[Row(f"watch {label}", "watch-3g-protocol",
          (lambda c: f"[3G*8800000015*{len(c):04X}*{c}]")(
              f"AL,{stamp},A,22.570515,N,113.8623166,E,0.00,95.3,0.0,9,100,100,100000,0,00200000,1,255"),
          at(NOW), last_known=old, min_age_s=10 * YEAR if old else 0, keeps_time=not old)
      for label, stamp, old in (("2016", "220414,134652", True), ("now", "281126,205900", False))],
]


def lorawan_rows() -> list[Row]:
    def chirpstack(when: datetime) -> str:
        return json.dumps({
            "deduplicationId": f"d-{when:%H%M}", "time": when.isoformat().replace("+00:00", "Z"),
            "deviceInfo": {"devEui": "a840410000000001", "deviceName": "lgt92"}, "fPort": 2,
            "object": {"ALARM_status": "TRUE", "latitude": 22.70626, "longitude": 114.24252},
        })
    return [
        Row("lorawan chirpstack uplink 2 h late", "lorawan-dragino-lgt92", chirpstack(NOW - timedelta(hours=2)),
            at(NOW), last_known=True, min_age_s=7200, keeps_time=False),
        Row("lorawan chirpstack uplink now", "lorawan-dragino-lgt92", chirpstack(NOW - timedelta(seconds=5)),
            at(NOW), last_known=False),
    ]


def http_rows() -> list[Row]:
    def wearable(fix: datetime, occurred: datetime) -> str:
        return json.dumps({"kind": "fall", "message_id": f"m-{fix:%Y}", "occurred_at": occurred.isoformat(),
                           "location": {"lat": 55.9486, "lon": -3.1999, "fix_time": fix.isoformat()}})
    return [
        Row("http fix from 2017, event now", "sosbridge-http-wearable",
            wearable(datetime(2017, 3, 1, tzinfo=UTC), NOW - timedelta(seconds=2)), at(NOW),
            last_known=True, min_age_s=9 * YEAR, keeps_time=True),
        Row("http clock never set (1970)", "sosbridge-http-wearable",
            wearable(NOW - timedelta(seconds=20), datetime(1970, 1, 1, tzinfo=UTC)), at(NOW),
            last_known=False, keeps_time=False),
    ]


@pytest.mark.parametrize("row", [*ROWS, *lorawan_rows(), *http_rows()], ids=lambda r: r.name)
def test_every_decoder_goes_through_one_fix_age_rule(row: Row) -> None:
    events = decode_frame(Frame(payload=row.payload.encode(), meta=row.meta), profile(row.profile))
    located = [e for e in events if e.location is not None]
    assert located, events
    for event in located:
        loc = event.location
        assert loc is not None
        assert loc.last_known is row.last_known, event
        assert bool(event.attributes.get("fix_stale")) is row.last_known
        if row.last_known and row.min_age_s is None:
            assert loc.age_s is None  # from the future: its age is unknown, never negative
        elif row.last_known:
            assert loc.age_s is not None and loc.age_s >= row.min_age_s
        if row.keeps_time is True:
            assert event.occurred_at is not None and "device_time" not in event.attributes
        elif row.keeps_time is False:
            # The bridge's receive time will be the alert's time; what the device said is kept beside it.
            assert event.occurred_at is None and "device_time" in event.attributes
        else:
            assert event.occurred_at is None and "device_time" not in event.attributes


def test_judging_twice_changes_nothing() -> None:
    [event] = decode_frame(Frame(payload=owntracks(1500000000, "u").encode(), meta=at(NOW)),
                           profile("owntracks-phone"))
    assert judge([event], NOW + timedelta(hours=5), 3600) == [event]


def fix(minutes_ago: float, last_known: bool = False) -> Location:
    age = minutes_ago * 60
    return Location(lat=55.9, lon=-3.2, fix_time=NOW - timedelta(minutes=minutes_ago), last_known=last_known,
                    age_s=age if age >= 0 else None)


@pytest.mark.parametrize(("current", "incoming", "replaces"), [
    (None, fix(120, last_known=True), True),  # nothing better known
    (fix(1), fix(0), True),
    (fix(1), fix(120, last_known=True), False),  # the 2-hour-old GLL
    (fix(1), fix(31 * 365 * 1440, last_known=True), False),  # the 1994 RMC
    (fix(1), fix(-30, last_known=True), False),  # from the future
    (fix(31 * 365 * 1440, last_known=True), fix(120, last_known=True), True),  # stale but fresher
    (fix(5), fix(10), False),  # an older live fix (a late delivery) never moves the person back
    (fix(5), Location(lat=None, lon=None), False),
    (Location(lat=1.0, lon=1.0), Location(lat=2.0, lon=2.0), True),  # no times: the newer frame wins
], ids=lambda v: repr(v)[:40])
def test_a_stale_fix_never_replaces_a_fresher_last_location(current: Location | None, incoming: Location,
                                                             replaces: bool) -> None:
    assert replaces_last_location(current, incoming) is replaces


def test_decoded_without_location_keeps_a_plausible_time() -> None:
    event = Decoded(action="alert", occurred_at=NOW - timedelta(minutes=5))
    assert judge([event], NOW, 3600) == [event]


@pytest.fixture
async def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_bridge(tmp_path) as env:
        await env.add_device("phone-old", token="old-phone-token-0123456789", profile_id="owntracks-phone-http",
                             identifiers={"owntracks": "jo/pixel"})
        yield env


async def test_owntracks_fix_from_2017_reaches_the_platform_as_last_known(env: BridgeEnv) -> None:
    auth = base64.b64encode(b"jo:old-phone-token-0123456789").decode()
    body = owntracks(int(datetime(2017, 6, 1, tzinfo=UTC).timestamp()), "u")
    async with httpx.AsyncClient(base_url=env.url, timeout=10) as client:
        answer = await client.post("/v1/owntracks", content=body.encode(), headers={
            "Authorization": f"Basic {auth}", "X-Limit-U": "jo", "X-Limit-D": "pixel",
            "Content-Type": "application/json"})
    assert answer.status_code == 200
    contact = await env.receiver.first(lambda c: c["device"]["id"] == "phone-old")
    loc = contact["location"]
    assert contact["kind"] == "sos" and loc["last_known"] is True and loc["age_s"] > 9 * YEAR
    occurred = datetime.fromisoformat(contact["occurred_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - occurred).total_seconds()) < 600  # when the bridge received it, not 2017
    assert contact["attributes"]["device_time"].startswith("2017-06-01")


async def test_http_location_update_two_hours_old_is_last_known(env: BridgeEnv) -> None:
    """An HTTP location update (built without a decoder) goes through the same rule: a 2-hour-old fix reaches
    the alert as last known with its age, and never replaces a live fix the alert or the device has."""
    token = "wearable-token-0123456789"
    await env.add_device("w-1", token=token, profile_id="sosbridge-http-wearable")
    now = datetime.now(UTC)
    old = (now - timedelta(hours=2)).isoformat()
    async with httpx.AsyncClient(base_url=env.url, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        created = await client.post("/v1/alerts", json={"kind": "fall", "message_id": "fa-1"})
        assert created.status_code == 202, created.text
        alert_id = created.json()["alert_id"]
        moved = await client.post(f"/v1/alerts/{alert_id}/location", json={
            "message_id": "fa-2", "location": {"lat": 51.5, "lon": -0.12, "fix_time": old}})
        assert moved.status_code == 202, moved.text
        alert = await env.store.get_alert(alert_id)
        assert alert is not None and alert.location is not None and alert.location.lat == pytest.approx(51.5)
        assert alert.location.last_known and alert.location.age_s is not None and alert.location.age_s > 7000
        live = await client.post(f"/v1/alerts/{alert_id}/location", json={
            "message_id": "fa-3", "location": {"lat": 55.9486, "lon": -3.1999, "fix_time": now.isoformat()}})
        assert live.status_code == 202
        again = await client.post(f"/v1/alerts/{alert_id}/location", json={
            "message_id": "fa-4", "location": {"lat": 51.5, "lon": -0.12, "fix_time": old}})
        assert again.status_code == 202
    alert = await env.store.get_alert(alert_id)
    assert alert is not None and alert.location is not None and alert.location.lat == pytest.approx(55.9486)
    device = await env.store.get_device("w-1")
    assert device is not None and device.last_location is not None
    assert device.last_location.lat == pytest.approx(55.9486) and not device.last_location.last_known
