"""CAP 1.2 rendering: schema validity, the spec rules the XSD leaves out, and Cancel chaining.

Test vectors: the OASIS CAP 1.2 Appendix A examples saved in tests/fixtures/standards/cap-1.2/examples
(bjoern-reetz/cap-tools @ 51a57085, data/oasis/example{2,3,4}.xml; see tests/fixtures/standards/SOURCES.md).
"""

from __future__ import annotations

from datetime import timedelta
from xml.etree import ElementTree as ET

import pytest

from bridge.core.contact import ContactMessage
from bridge.core.model import AlertKind
from bridge.delivery.formats import render, validate
from bridge.delivery.formats.cap import CONTENT_TYPE, check_cap_rules
from bridge.delivery.formats.common import RenderOptions
from bridge.delivery.formats.schema_loader import CAP_NS, cap_schema
from tests.support.formats_factory import BEN_NEVIS, STANDARDS, T0, contact, gnss, no_location_contact

NS = {"cap": CAP_NS}


def _root(body: bytes) -> ET.Element:
    return ET.fromstring(body)


def _params(root: ET.Element) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in root.iterfind("cap:info/cap:parameter", NS):
        out.setdefault(p.findtext("cap:valueName", namespaces=NS) or "", []).append(
            p.findtext("cap:value", namespaces=NS) or ""
        )
    return out


@pytest.mark.parametrize("status,expected", [("actual", "Actual"), ("exercise", "Exercise"), ("test", "Test")])
def test_alert_validates_and_carries_status(status: str, expected: str) -> None:
    body, ctype = render(contact(status=status), "cap")
    assert ctype == CONTENT_TYPE
    assert validate(body, ctype) == []
    root = _root(body)
    assert root.findtext("cap:status", namespaces=NS) == expected
    assert root.findtext("cap:msgType", namespaces=NS) == "Alert"
    assert root.find("cap:references", NS) is None


def test_timestamps_are_strict_cap_datetimes() -> None:
    root = _root(render(contact(), "cap")[0])
    # received_at is 09:26:53.589793 UTC: whole seconds, UTC written as -00:00, never Z.
    assert root.findtext("cap:sent", namespaces=NS) == "2026-03-14T09:26:53-00:00"
    assert root.findtext("cap:info/cap:onset", namespaces=NS) == "2026-03-14T09:26:51-00:00"


def test_circle_is_lat_lon_and_radius_in_km() -> None:
    c = contact(location=gnss(*BEN_NEVIS, accuracy_m=850.24))
    root = _root(render(c, "cap")[0])
    circle = root.findtext("cap:info/cap:area/cap:circle", namespaces=NS)
    assert circle == "56.796891,-5.003675 0.8502"
    params = _params(root)
    assert params["sosbridge:accuracy_m"] == ["850.24"]
    assert params["sosbridge:bng"] == [c.location.grid_ref]  # type: ignore[union-attr]
    geocode = root.find("cap:info/cap:area/cap:geocode", NS)
    assert geocode is not None and geocode.findtext("cap:value", namespaces=NS) == c.location.grid_ref  # type: ignore[union-attr]


def test_parameters_carry_device_kind_silent_language() -> None:
    params = _params(_root(render(contact(kind=AlertKind.duress, silent=True), "cap")[0]))
    assert params["sosbridge:device"] == ["pendant-0042"]
    assert params["sosbridge:kind"] == ["duress"]
    assert params["sosbridge:silent"] == ["true"]
    assert params["sosbridge:language"] == ["gd"]
    assert params["sosbridge:communication_need"] == ["deaf: text only"]


def test_silent_alarm_instruction_and_loud_alarm_without_it() -> None:
    silent = _root(render(contact(silent=True), "cap")[0])
    loud = _root(render(contact(silent=False), "cap")[0])
    assert "SILENT" in (silent.findtext("cap:info/cap:instruction", namespaces=NS) or "")
    assert loud.find("cap:info/cap:instruction", NS) is None


def test_cancel_references_the_original_alert() -> None:
    opts = RenderOptions(domain="bridge.example.org")
    original = contact()
    cancel = contact(msg_type="cancel", seq=2, created_at=T0 + timedelta(minutes=3), reason="false alarm")
    a_body, ctype = render(original, "cap", opts)
    c_body, _ = render(cancel, "cap", opts)
    assert validate(c_body, ctype) == []
    a, c = _root(a_body), _root(c_body)
    assert c.findtext("cap:msgType", namespaces=NS) == "Cancel"
    triplet = ",".join(a.findtext(f"cap:{t}", namespaces=NS) or "" for t in ("sender", "identifier", "sent"))
    assert c.findtext("cap:references", namespaces=NS) == triplet
    assert c.findtext("cap:sent", namespaces=NS) == "2026-03-14T09:29:53-00:00"
    assert c.findtext("cap:identifier", namespaces=NS) != a.findtext("cap:identifier", namespaces=NS)
    assert c.findtext("cap:incidents", namespaces=NS) == a.findtext("cap:incidents", namespaces=NS)
    assert c.findtext("cap:note", namespaces=NS) == "false alarm"
    assert c.findtext("cap:info/cap:responseType", namespaces=NS) == "AllClear"


def test_update_references_original_not_itself() -> None:
    update = _root(render(contact(msg_type="update", seq=3), "cap")[0])
    refs = (update.findtext("cap:references", namespaces=NS) or "").split(",")
    assert refs[1].endswith(":1") and refs[2] == "2026-03-14T09:26:53-00:00"


def test_message_from_the_person_is_an_update_with_a_note() -> None:
    text = "He is outside <the> door & I can't talk"
    msg = ContactMessage(message_id="t-1", text=text, sent_at=T0 + timedelta(minutes=2), transport="http")
    body, ctype = render(contact(msg_type="message", seq=2, reason="message from the person", message=msg), "cap")
    assert validate(body, ctype) == []
    root = _root(body)
    assert root.findtext("cap:msgType", namespaces=NS) == "Update"
    assert root.findtext("cap:note", namespaces=NS) == f"Message from the person: {text}"
    assert (root.findtext("cap:references", namespaces=NS) or "").split(",")[1].endswith(":1")
    assert (root.findtext("cap:info/cap:headline", namespaces=NS) or "").startswith("MESSAGE FROM THE PERSON")


def test_retry_renders_byte_identical() -> None:
    c = contact()
    again = type(c).model_validate_json(c.to_json())  # what the forwarder does with the outbox payload
    assert render(c, "cap")[0] == render(again, "cap")[0]


def test_no_location_has_no_area_and_still_validates() -> None:
    body, ctype = render(no_location_contact(), "cap")
    assert validate(body, ctype) == []
    assert _root(body).find("cap:info/cap:area", NS) is None


@pytest.mark.parametrize("name", ["oasis-cap12-example2.xml", "oasis-cap12-example3.xml", "oasis-cap12-example4.xml"])
def test_oasis_examples_pass_the_validator(name: str) -> None:
    body = (STANDARDS / "cap-1.2" / "examples" / name).read_bytes()
    # The OASIS examples are public broadcasts (scope Public), so none of our private-scope rules fire.
    assert validate(body, "application/cap+xml") == []


def test_example3_reference_triplet_shape() -> None:
    root = _root((STANDARDS / "cap-1.2" / "examples" / "oasis-cap12-example3.xml").read_bytes())
    expected = "trinet@caltech.edu,TRI13970876.1,2003-06-11T20:30:00-07:00"
    assert root.findtext("cap:references", namespaces=NS) == expected


def _mutate(body: bytes, old: str, new: str) -> bytes:
    assert old.encode() in body
    return body.replace(old.encode(), new.encode(), 1)


def test_rules_the_xsd_misses_are_caught() -> None:
    body, ctype = render(contact(msg_type="cancel", seq=2), "cap")
    schema = cap_schema()
    # Private scope without addresses: the XSD accepts it, our rules do not.
    no_addr = _mutate(body, "<addresses>police-contact-platform</addresses>", "")
    assert schema.is_valid(no_addr.decode())
    assert any("addresses" in e for e in validate(no_addr, ctype))
    # A nonsense circle passes the XSD.
    bad_circle = _mutate(body, "<circle>55.948611,-3.200833 0.0125</circle>", "<circle>somewhere</circle>")
    assert schema.is_valid(bad_circle.decode())
    assert any("circle" in e for e in validate(bad_circle, ctype))
    # A Cancel with no references.
    root = _root(body)
    refs = root.findtext("cap:references", namespaces=NS) or ""
    no_refs = _mutate(body, f"<references>{refs}</references>", "")
    assert any("references" in e for e in check_cap_rules(_root(no_refs)))
    # +00:00 is schema-valid but the spec says UTC is -00:00.
    plus = _mutate(body, "<sent>2026-03-14T09:26:54-00:00</sent>", "<sent>2026-03-14T09:26:54+00:00</sent>")
    assert schema.is_valid(plus.decode())
    assert any("-00:00" in e for e in validate(plus, ctype))


def test_schema_errors_are_reported() -> None:
    body, ctype = render(contact(), "cap")
    zulu = _mutate(body, "<sent>2026-03-14T09:26:53-00:00</sent>", "<sent>2026-03-14T09:26:53Z</sent>")
    errors = validate(zulu, ctype)
    assert errors and any("sent" in e for e in errors)
    assert validate(b"<alert", ctype)[0].startswith("not well-formed")
    assert "DOCTYPE" in validate(b'<!DOCTYPE x [<!ENTITY a "b">]><alert/>', ctype)[0]
