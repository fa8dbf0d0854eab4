"""Pure decoder tests for the serial protocols, with the genuine samples cited per vector.

Sources: NMEA and SMS (pynmea2 @ 13e309b4ec1e README/tests; Telit ME910C1 and Multi-Tech AT manuals;
python-gsmmodem @ 834c68b1387c test/test_modem.py; TK-203 manual; Bulldog Secure FAQ) and
Contact ID (SpanDSP ademco_contactid.c rule and tests/ademco_contactid_tests.c reports).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.core.model import AlertKind
from bridge.devices.decoding import DecodeError, Frame
from bridge.devices.profiles import ProfileRegistry
from bridge.devices.samples import check_profile
from device_adapters.decoders import contact_id, diy_frame, gsm_sms, nmea
from device_adapters.serial.config import SerialConfigError, parse_ports
from device_adapters.serial.gsm import msisdn_variants, parse_header, parse_listing

REG = ProfileRegistry.load()
MY_PROFILES = [
    "ademco-contact-id-receiver",
    "generic-nmea-gps",
    "coban-tk-sms-tracker",
    "bulldog-secure-sms-tracker",
    "sosbridge-diy-button",
    "sosbridge-coap-device",
]


@pytest.mark.parametrize("profile_id", MY_PROFILES)
def test_profile_samples_pass(profile_id: str) -> None:
    profile = REG.get(profile_id)
    assert profile is not None
    results = check_profile(profile)
    assert results, "every profile carries samples"
    assert [r.sample for r in results if not r.ok] == []


# -- Contact ID ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "digit"),
    [
        # SpanDSP tests/ademco_contactid_tests.c reports, checksums as listed in 04-contact-id-sia-dc09.md
        ("1234 18 1 131 01 015 8", "8"),
        ("1234 18 3 131 01 015 6", "6"),
        ("1234 18 1 401 02 003 5", "5"),
        ("1234 18 3 401 03 005 F", "F"),
    ],
)
def test_contact_id_checksum_matches_spandsp_reports(line: str, digit: str) -> None:
    compact = line.replace(" ", "")
    assert contact_id.checksum_digit(compact[:-1]) == digit
    assert contact_id.checksum_ok(compact)
    doc = contact_id.parse_line(line)
    assert doc["account"] == "1234" and doc["zone"] == compact[12:15]


def test_contact_id_every_single_digit_error_is_caught() -> None:
    good = "123418112001015F"
    for i in range(len(good)):
        for c in "0123456789BCDEF":
            if c == good[i]:
                continue
            bad = good[:i] + c + good[i + 1 :]
            # A mod-15 sum misses swaps of digits worth the same mod 15 only; single substitutions never.
            with pytest.raises(DecodeError):
                contact_id.parse_line(bad)


def test_contact_id_dtmf_keys_and_mapping() -> None:
    profile = REG.get("ademco-contact-id-receiver")
    assert profile is not None
    # DTMF '#' stands for C: a receiver printing keypad symbols is understood.
    body = "123418112101003"
    s = contact_id.checksum_digit(body)
    events = contact_id.decode(Frame(payload=f"{body}{s}".encode()), profile)
    assert [(e.action, e.kind, e.silent) for e in events] == [("alert", AlertKind.duress, True)]
    restore = "123418312001015"
    events = contact_id.decode(Frame(payload=(restore + contact_id.checksum_digit(restore)).encode()), profile)
    assert [e.action for e in events] == ["restore"]
    cancel = "123418140601003"
    events = contact_id.decode(Frame(payload=(cancel + contact_id.checksum_digit(cancel)).encode()), profile)
    assert [e.action for e in events] == ["cancel"]
    assert events[0].attributes["zone"] == "003"


# -- NMEA ------------------------------------------------------------------------------------------------
def test_nmea_gga_accuracy_from_hdop_and_date_from_meta() -> None:
    profile = REG.get("generic-nmea-gps")
    assert profile is not None
    line = "$GPGGA,184353.07,1929.045,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000*6D"  # pynmea2 README
    (ev,) = nmea.decode(Frame(payload=line.encode(), meta={"utc_date": "2026-11-28"}), profile)
    loc = ev.location
    assert loc is not None
    assert loc.lat == pytest.approx(-(19 + 29.045 / 60)) and loc.lon == pytest.approx(24 + 10.506 / 60)
    assert loc.accuracy_m == pytest.approx(2.6 * 5.0 * 2)
    assert loc.altitude_m == 100.0
    assert loc.fix_time == datetime(2026, 11, 28, 18, 43, 53, 70000, tzinfo=UTC)
    assert ev.attributes["satellites"] == 4


def test_nmea_rmc_reference_sentence() -> None:
    profile = REG.get("generic-nmea-gps")
    assert profile is not None
    line = "$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*68"  # pynmea2 test_types.py
    (ev,) = nmea.decode(Frame(payload=line.encode()), profile)
    assert ev.location is not None
    assert ev.location.fix_time == datetime(1994, 11, 19, 22, 54, 46, tzinfo=UTC)
    assert ev.location.speed_mps == pytest.approx(0.5 * 0.514444)
    assert ev.location.heading_deg == 54.7
    # the NMEA 2.3 mode indicator variant decodes too (pynmea2 test_types.py)
    (ev2,) = nmea.decode(Frame(payload=b"$GPRMC,123519.00,A,4807.038,N,01131.000,E,,,230394,,,S*4C"), profile)
    assert ev2.location is not None and ev2.location.lat == pytest.approx(48 + 7.038 / 60)


def test_nmea_checksum_refused_and_missing_checksum_tolerated() -> None:
    profile = REG.get("generic-nmea-gps")
    assert profile is not None
    with pytest.raises(nmea.ChecksumError):
        nmea.decode(Frame(payload=b"$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*69"), profile)
    (ev,) = nmea.decode(Frame(payload=b"$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E"), profile)
    assert ev.location is not None


# -- GSM SMS ---------------------------------------------------------------------------------------------
def test_cmt_headers_from_modem_manuals() -> None:
    # Telit ME910C1 AT Reference Guide, +CNMI example
    assert parse_header('+CMT: "+821020955219",,"07/07/26,20:09:07+36"') == (
        "+821020955219",
        "07/07/26,20:09:07+36",
    )
    # Multi-Tech GSM manual: no alpha field, extra CSDH fields, a space in the time
    sender, scts = parse_header('+CMT: "123456","98/10/01,12:30 00+00",129,4,32,240,"15379",129,5') or ("", "")
    assert sender == "123456" and scts == "98/10/01,12:30 00+00"
    assert gsm_sms.parse_scts(scts) == datetime(1998, 10, 1, 12, 30, 0, tzinfo=UTC)
    # PDU-mode read (python-gsmmodem test_modem.py): not a text header
    assert parse_header("+CMGR: 0,,24") is None


def test_scts_offset_is_in_quarter_hours() -> None:
    # "+36" = UTC+9 (Telit example)
    assert gsm_sms.parse_scts("07/07/26,20:09:07+36") == datetime(2007, 7, 26, 11, 9, 7, tzinfo=UTC)
    assert gsm_sms.parse_scts("13/01/28,14:51:42+08") == datetime(2013, 1, 28, 12, 51, 42, tzinfo=UTC)


def test_cmgl_listing_from_python_gsmmodem() -> None:
    lines = ['+CMGL: 0,"REC UNREAD","+27748577604",,"13/01/28,14:51:42+08"', "Hello raspberry pi"]
    (sms,) = parse_listing(lines)
    assert (sms.index, sms.sender, sms.scts) == (0, "+27748577604", "13/01/28,14:51:42+08")
    assert sms.body == "Hello raspberry pi"


def test_tracker_bodies() -> None:
    tk = (
        "lat: 22.566923 long: 114.051331 speed:85.60 28/10/09 03:33 F:4.32V,0, Signal:F\n"
        "heip me imei:359587011016261 05 41.9"
    )
    doc = gsm_sms.parse_body(tk, "+447700900123", "09/10/28,03:33:10+00")
    assert (doc["lat"], doc["lon"]) == (22.566923, 114.051331)
    assert (doc["imei"], doc["battery_state"]) == ("359587011016261", "F")
    bulldog = gsm_sms.parse_body("SOS,110727 02:48,V,16,23Km/h,61%,,114.082329")
    assert bulldog["keyword"] == "SOS" and bulldog["gps_valid"] is False and bulldog["battery_pct"] == 61
    assert "lat" not in bulldog
    maps = gsm_sms.parse_body("help me! http://maps.google.com/maps?q=55.9533,-3.1883")
    assert (maps["lat"], maps["lon"]) == (55.9533, -3.1883)
    # the same stored SMS read twice dedupes; a later repeat (new SMSC time) does not
    assert doc["sms_id"] == gsm_sms.parse_body(tk, "+447700900123", "09/10/28,03:33:10+00")["sms_id"]
    assert doc["sms_id"] != gsm_sms.parse_body(tk, "+447700900123", "09/10/28,03:36:10+00")["sms_id"]


def test_msisdn_variants() -> None:
    assert "+447700900123" in msisdn_variants("07700900123", "44")
    assert "+447700900123" in msisdn_variants("00447700900123", None)
    assert "447700900123" in msisdn_variants("+447700900123", None)


# -- DIY frame -------------------------------------------------------------------------------------------
def test_crc16_check_value() -> None:
    assert diy_frame.crc16_ccitt(b"123456789") == 0x29B1  # the catalogued CRC-16/CCITT-FALSE check value


def test_diy_roundtrip_with_location_and_framer_resync() -> None:
    profile = REG.get("sosbridge-diy-button")
    assert profile is not None
    one = diy_frame.encode_alert(0x1234, 9, 300, AlertKind.duress, silent=True, lat=55.95, lon=-3.19, accuracy_m=12)
    two = diy_frame.encode(diy_frame.TYPE_CANCEL, 0x1234, 9, 301)
    corrupted = bytearray(two)
    corrupted[6] ^= 0x40
    stream = b"\x00noise\xa5" + one + bytes(corrupted) + two + two[:5]
    frames, tail, skipped = diy_frame.split_frames(stream)
    assert frames == [one, bytes(corrupted), two] and tail == two[:5] and skipped == 7
    (ev,) = diy_frame.decode(Frame(payload=frames[0]), profile)
    assert (ev.kind, ev.silent, ev.message_id) == (AlertKind.duress, True, "00001234-0009-012C")
    assert ev.location is not None and ev.location.lat == pytest.approx(55.95) and ev.location.accuracy_m == 12
    with pytest.raises(diy_frame.ChecksumError):
        diy_frame.decode(Frame(payload=frames[1]), profile)
    assert [e.action for e in diy_frame.decode(Frame(payload=frames[2]), profile)] == ["cancel"]


def test_port_config() -> None:
    ports = parse_ports(
        "gsm=/dev/ttyUSB2?baud=115200&cc=44, nmea=/dev/gps?device=pendant-7&interval=5,diy=/dev/ttyACM0"
    )
    assert [(p.protocol, p.path, p.baud, p.device_id) for p in ports] == [
        ("gsm", "/dev/ttyUSB2", 115200, None),
        ("nmea", "/dev/gps", 9600, "pendant-7"),
        ("diy", "/dev/ttyACM0", 9600, None),
    ]
    assert ports[0].options == {"cc": "44"} and ports[1].options == {"interval": "5"}
    with pytest.raises(SerialConfigError):
        parse_ports("modbus=/dev/ttyS0")
