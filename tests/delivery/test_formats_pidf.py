"""PIDF-LO rendering: strict schema validity (RFC 3863/4479/4119/5139/7459 + OGC geoshape), uncertainty in
metres with confidence, civic address for registered addresses, the device id, and the rules real files break.

Test vectors: tests/fixtures/standards/pidf-lo/examples (PhrSite/Ng911Lib @ 39f39ed0, Testing/Ng911LibUnitTests/
PidfFiles/*; the RFC 5491 examples and device-style fixtures; see tests/fixtures/standards/SOURCES.md).
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from bridge.delivery.formats import render, validate
from bridge.delivery.formats.common import device_urn
from bridge.delivery.formats.pidf import NoLocation
from bridge.delivery.formats.schema_loader import CA_NS, CON_NS, DM_NS, GML_NS, GP_NS, GS_NS, pidf_schema
from tests.support.formats_factory import BEN_NEVIS, REGISTERED, STANDARDS, contact, gnss, no_location_contact

NS = {"dm": DM_NS, "gp": GP_NS, "gml": GML_NS, "gs": GS_NS, "con": CON_NS, "ca": CA_NS}
PIDF = "application/pidf+xml"


def _root(body: bytes) -> ET.Element:
    return ET.fromstring(body)


def test_circle_with_uncertainty_in_metres_and_confidence() -> None:
    c = contact(location=gnss(*BEN_NEVIS, accuracy_m=850.24))
    body, ctype = render(c, "pidf")
    assert ctype == PIDF
    assert validate(body, ctype) == []
    root = _root(body)
    circle = root.find(".//gs:Circle", NS)
    assert circle is not None and circle.get("srsName") == "urn:ogc:def:crs:EPSG::4326"
    assert circle.findtext("gml:pos", namespaces=NS) == "56.796891 -5.003675"  # latitude first
    radius = circle.find("gs:radius", NS)
    assert radius is not None and radius.text == "850.24" and radius.get("uom") == "urn:ogc:def:uom:EPSG::9001"
    conf = root.find(".//con:confidence", NS)
    assert conf is not None and conf.text == "95" and conf.get("pdf") == "normal"
    assert root.findtext(".//gp:method", namespaces=NS) == "GPS"


def test_unknown_accuracy_gives_a_point_without_confidence() -> None:
    body, ctype = render(contact(location=gnss(*BEN_NEVIS, accuracy_m=None)), "pidf")
    assert validate(body, ctype) == []
    root = _root(body)
    assert root.find(".//gml:Point", NS) is not None
    assert root.find(".//con:confidence", NS) is None


def test_device_id_and_fix_time() -> None:
    c = contact()
    root = _root(render(c, "pidf")[0])
    assert root.get("entity") == "pres:pendant-0042@sosbridge.invalid"
    device = root.find("dm:device", NS)
    assert device is not None and device.get("id") == "d-pendant-0042"
    assert device.findtext("dm:deviceID", namespaces=NS) == device_urn(c)
    assert device_urn(c).startswith("urn:uuid:")
    assert device.findtext("dm:timestamp", namespaces=NS) == "2026-03-14T09:26:49.589Z"  # the fix time


def test_registered_address_carries_civic_with_coordinates() -> None:
    body, ctype = render(contact(location=REGISTERED), "pidf")
    assert validate(body, ctype) == []
    root = _root(body)
    infos = root.findall(".//gp:location-info", NS)
    assert len(infos) == 1
    civic = infos[0].find("ca:civicAddress", NS)
    assert civic is not None
    assert [el.tag.split("}")[1] for el in civic] == ["country", "A1", "A2", "A3", "RD", "HNO", "LOC", "PC"]
    assert civic.findtext("ca:country", namespaces=NS) == "GB"
    assert civic.findtext("ca:PC", namespaces=NS) == "EH1 1YZ"
    assert infos[0].find("gml:Point", NS) is not None
    assert root.findtext(".//gp:method", namespaces=NS) == "Manual"


def test_no_location_cannot_be_rendered() -> None:
    with pytest.raises(NoLocation):
        render(no_location_contact(), "pidf")


@pytest.mark.parametrize("name", ["rfc5491-tuple-circle.xml", "rfc5491-tuple-ellipse.xml"])
def test_rfc5491_examples_are_valid(name: str) -> None:
    assert validate((STANDARDS / "pidf-lo" / "examples" / name).read_bytes(), PIDF) == []


@pytest.mark.parametrize(
    "name,needle",
    [
        ("device-point.xml", "entity"),
        ("device-civic.xml", "entity"),
        ("device-circle-with-confidence.xml", "deviceID"),
        ("person-device-civic-and-circle.xml", "entity"),
    ],
)
def test_non_conformant_fixtures_are_rejected(name: str, needle: str) -> None:
    errors = validate((STANDARDS / "pidf-lo" / "examples" / "non-conformant" / name).read_bytes(), PIDF)
    assert any(needle in e for e in errors), errors


def test_schema_valid_but_semantically_wrong_fixtures_are_caught() -> None:
    # device-circle-dynamic.xml passes the XSD only because <method> in the PIDF namespace slips through a
    # lax wildcard; rfc6848-uk-civic-extension.xml uses country "UK" (ISO 3166-1 says GB).
    dynamic = (STANDARDS / "pidf-lo" / "examples" / "device-circle-dynamic.xml").read_bytes()
    assert pidf_schema().is_valid(dynamic.decode("utf-8-sig"))
    assert any("geopriv namespace" in e for e in validate(dynamic, PIDF))
    uk = (STANDARDS / "pidf-lo" / "examples" / "rfc6848-uk-civic-extension.xml").read_bytes()
    assert pidf_schema().is_valid(uk.decode("utf-8-sig"))
    assert any("'GB'" in e for e in validate(uk, PIDF))


def test_bad_position_and_radius_unit_are_caught() -> None:
    body = render(contact(location=gnss(*BEN_NEVIS, accuracy_m=30)), "pidf")[0]
    swapped = body.replace(b"56.796891 -5.003675", b"96.796891 -5.003675")
    assert any("out of range" in e for e in validate(swapped, PIDF))
    feet = body.replace(b"urn:ogc:def:uom:EPSG::9001", b"urn:ogc:def:uom:EPSG::9002")
    assert any("metres" in e for e in validate(feet, PIDF))
