"""NENA EIDO (NENA-STA-021.1 JSON): validity against NENA's OpenAPI schema through jsonschema, PIDF-LO by
value, RFC 7852 additional data, and the referential rules the schema does not check.

Test vectors: tests/fixtures/standards/eido/examples/sample-call-transfer-eido.json (NENA911/EIDO-JSON @ 7f62055,
Samples/Sample call transfer EIDO.json) and tests/fixtures/standards/rfc7852-additional-data/examples (PhrSite/
Ng911Lib @ 39f39ed0, AdditionalDataFiles/*); see tests/fixtures/standards/SOURCES.md.
"""

from __future__ import annotations

import json
from datetime import timedelta
from xml.etree import ElementTree as ET

import pytest

from bridge.core.contact import ContactMessage
from bridge.delivery.formats import render, validate
from bridge.delivery.formats.additional_data import check_block
from bridge.delivery.formats.eido import CONTENT_TYPE
from bridge.delivery.formats.schema_loader import GS_NS
from bridge.delivery.formats.validate import validate_eido_doc
from tests.support.formats_factory import BEN_NEVIS, STANDARDS, T0, contact, device, gnss, no_location_contact

EIDO = CONTENT_TYPE


def _doc(c) -> dict:  # type: ignore[no-untyped-def]
    body, ctype = render(c, "eido")
    assert ctype == EIDO
    assert validate(body, ctype) == []
    return json.loads(body)


def test_alert_validates_with_location_by_value() -> None:
    c = contact(location=gnss(*BEN_NEVIS, accuracy_m=42.0))
    doc = _doc(c)
    assert doc["eidoVersion"] == "1.0"
    assert doc["incidentComponent"]["internalIncidentId"] == c.alert_id
    assert doc["incidentComponent"]["incidentTypeInternalCode"] == "panic"
    loc = doc["locationComponent"][0]
    pidf = ET.fromstring(loc["locationByValue"].encode())
    assert pidf.findtext(f".//{{{GS_NS}}}radius") == "42"  # metres in PIDF-LO
    assert c.location is not None and c.location.grid_ref and c.location.grid_ref in loc["locationDescriptionText"]
    call = doc["callComponent"][0]
    assert call["priorityIdentifier"] == "high"
    assert call["callStartTimestamp"] == "2026-03-14T09:26:53.589Z"
    assert call["locationReference"] == [{"$ref": loc["$id"]}]


def test_additional_data_blocks_are_rfc7852() -> None:
    doc = _doc(contact())
    blocks = [b["additionalDataByValue"] for b in doc["additionalDataComponent"]]
    roots = {ET.fromstring(b.encode()).tag.split("}")[1] for b in blocks}
    assert roots == {
        "EmergencyCallData.ProviderInfo",
        "EmergencyCallData.ServiceInfo",
        "EmergencyCallData.DeviceInfo",
        "EmergencyCallData.SubscriberInfo",
    }
    assert all(check_block(b) == [] for b in blocks)
    device_block = next(b for b in blocks if "DeviceInfo" in b)
    assert 'TypeOfDeviceID="SN">pendant-0042<' in device_block
    sub = next(b for b in blocks if "SubscriberInfo" in b)
    assert "tel:+447700900123" in sub and "<ns0:" not in sub


def test_person_callback_and_silent_note() -> None:
    doc = _doc(contact(silent=True))
    assert doc["personComponent"][0]["personIncidentRoleRegistryText"] == ["Caller"]
    assert doc["callbackComponent"][0]["callBackInformationUri"] == ["tel:+447700900123"]
    notes = doc["notesComponent"][0]["notesActionComments"]
    assert "SILENT ALARM" in notes and "deaf: text only" in notes


def test_no_person_no_location_still_valid() -> None:
    c = no_location_contact().model_copy(update={"person": None})
    doc = _doc(c)
    assert "locationComponent" not in doc and "personComponent" not in doc
    assert "locationReference" not in doc["incidentComponent"]


def test_cancel_ends_the_call_and_keeps_component_ids() -> None:
    first = _doc(contact())
    cancel = _doc(contact(msg_type="cancel", seq=2, created_at=T0 + timedelta(minutes=2), reason="pressed by mistake"))
    assert cancel["callComponent"][0]["callStateRegistryText"] == "callEnd"
    assert first["callComponent"][0]["callStateRegistryText"] == "callBegin"
    # Same incident, call and location ids: the platform updates rather than duplicates.
    assert cancel["$id"] == first["$id"]
    assert cancel["locationComponent"][0]["$id"] == first["locationComponent"][0]["$id"]
    assert cancel["lastUpdateTimeStamp"] > first["lastUpdateTimeStamp"]
    assert "pressed by mistake" in cancel["notesComponent"][0]["notesActionComments"]


def test_message_from_the_person_is_a_note() -> None:
    msg = ContactMessage(message_id="t-1", text="I can't talk <now>", sent_at=T0 + timedelta(minutes=2),
                         transport="mqtt")
    body, ctype = render(contact(msg_type="message", seq=2, reason="message from the person", message=msg), "eido")
    assert validate(body, ctype) == []
    notes = json.loads(body)["notesComponent"][0]["notesActionComments"]
    assert "Message from the person (mqtt): I can&#x27;t talk &lt;now&gt;" in notes


def test_exercise_status_is_marked() -> None:
    doc = _doc(contact(status="exercise", dev=device(status="exercise")))
    assert "EXERCISE" in doc["notesComponent"][0]["notesActionComments"]
    assert "status=exercise" in doc["alarmsSensorsComponent"][0]["csaaAlarmInformation"]


def test_retry_renders_byte_identical() -> None:
    c = contact()
    assert render(c, "eido")[0] == render(type(c).model_validate_json(c.to_json()), "eido")[0]


def test_schema_and_rule_violations_are_reported() -> None:
    doc = json.loads(render(contact(), "eido")[0])
    broken = json.loads(json.dumps(doc))
    del broken["agencyComponent"]
    assert any("agencyComponent" in e for e in validate_eido_doc(broken))
    bad_time = json.loads(json.dumps(doc))
    bad_time["lastUpdateTimeStamp"] = "14/03/2026 09:26"
    assert any("date-time" in e for e in validate_eido_doc(bad_time))
    dangling = json.loads(json.dumps(doc))
    dangling["callComponent"][0]["locationReference"] = [{"$ref": "urn:uuid:nowhere"}]
    assert any("points at no component" in e for e in validate_eido_doc(dangling))
    bad_pidf = json.loads(json.dumps(doc))
    bad_pidf["locationComponent"][0]["locationByValue"] = bad_pidf["locationComponent"][0]["locationByValue"].replace(
        "dm:deviceID", "dm:deviceId"
    )
    assert any("locationByValue" in e for e in validate_eido_doc(bad_pidf))


def test_nena_sample_passes_schema_but_its_pidf_lacks_device_id() -> None:
    body = (STANDARDS / "eido" / "examples" / "sample-call-transfer-eido.json").read_bytes()
    errors = validate(body, EIDO)
    # Everything except the embedded PIDF-LO is fine; that misses dm:deviceID (eido.md #3).
    assert errors and all("locationByValue" in e for e in errors)
    assert any("deviceID" in e for e in errors)


@pytest.mark.parametrize("name", ["ProviderInfo.xml", "ServiceInfo.xml", "DeviceInfo.xml", "Comment.xml"])
def test_rfc7852_examples_pass_structural_checks(name: str) -> None:
    assert check_block((STANDARDS / "rfc7852-additional-data" / "examples" / name).read_text()) == []


def test_rfc7852_structure_errors() -> None:
    ns = "urn:ietf:params:xml:ns:EmergencyCallData:ServiceInfo"
    missing = (
        f'<s:EmergencyCallData.ServiceInfo xmlns:s="{ns}">'
        "<s:ServiceType>wireless</s:ServiceType></s:EmergencyCallData.ServiceInfo>"
    )
    assert any("DataProviderReference" in e for e in check_block(missing))
    wrong_ns = '<s:EmergencyCallData.ServiceInfo xmlns:s="urn:x"/>'
    assert check_block(wrong_ns)
