"""NENA EIDO (NENA-STA-021.1, JSON) for a contact.

One EIDO per contact: the bridge operator as agency and the bridge itself as an automated agent; an
incident and a data-only "call" for the alarm; the location as a PIDF-LO by value; RFC 7852 blocks
(ProviderInfo, ServiceInfo, DeviceInfo, SubscriberInfo) as additional data; an alarms/sensors component
with the device alarm summary; notes for what a call taker must know (silent, communication needs).

Component `$id`s derive from the alert id, so later contacts update the same components (only
`lastUpdateTimeStamp` moves), and a retried contact renders byte-identical JSON.
"""

from __future__ import annotations

import html
import json
from typing import Any

from bridge.core.contact import Contact
from bridge.delivery.formats import additional_data as ad
from bridge.delivery.formats.common import KIND_LABELS, RenderOptions, det_uuid, fmt_num, rfc3339
from bridge.delivery.formats.pidf import NoLocation, render_pidf
from bridge.delivery.formats.xml_check import validate_pidf_text

CONTENT_TYPE = "application/emergency.eido+json"

_PRIORITY = {"extreme": "highest", "severe": "high", "moderate": "normal", "minor": "low", "unknown": "normal"}
# NENA Incident Type registry values are not published with the schema; these are our best mapping
# and can be overridden per deployment with RenderOptions.incident_types.
_INCIDENT_TYPES = {
    "sos": "Police",
    "panic": "Police",
    "duress": "Police",
    "fall": "Medical",
    "no_movement": "Medical",
    "medical": "Medical",
    "fire": "Fire",
    "check_in_missed": "Police",
    "device_offline": "Other",
    "tamper": "Police",
    "low_battery": "Other",
    "device_removed": "Police",
    "test": "Other",
}


def _ref(target: str) -> dict[str, str]:
    return {"$ref": target}


def _cid(contact: Contact, what: str) -> str:
    return f"urn:uuid:{det_uuid('eido', contact.alert_id, what)}"


def _notes_text(contact: Contact) -> str:
    parts = [f"{KIND_LABELS.get(contact.kind.value, contact.kind.value)} from device {contact.device.id}"]
    if contact.msg_type == "cancel":
        parts.append("ALARM CANCELLED" + (f": {contact.reason}" if contact.reason else ""))
    elif contact.msg_type == "message" and contact.message is not None:
        parts.append(f"Message from the person ({contact.message.transport}): {contact.message.text}")
    elif contact.reason:
        parts.append(f"Reason: {contact.reason}")
    if contact.silent:
        parts.append("SILENT ALARM: do not call the device or the person")
    if contact.status != "actual":
        parts.append(f"{contact.status.upper()}: not a real emergency")
    if contact.language:
        parts.append(f"Language: {contact.language}")
    if contact.communication_needs:
        parts.append("Communication needs: " + "; ".join(contact.communication_needs))
    if contact.person and contact.person.vulnerability_notes:
        parts.append(f"Notes: {contact.person.vulnerability_notes}")
    loc = contact.location
    if loc is not None and loc.last_known:
        parts.append("Location is the last known position")
    # notesActionComments is HTML5.
    return "<p>" + "</p><p>".join(html.escape(p) for p in parts) + "</p>"


def _location_text(contact: Contact) -> str | None:
    loc = contact.location
    if loc is None:
        return None
    bits = [f"source {loc.source}"]
    if loc.civic:
        bits.append(loc.civic.one_line())
    if loc.grid_ref:
        bits.append(f"OSGB {loc.grid_ref}")
    if loc.accuracy_m is not None:
        bits.append(f"uncertainty {fmt_num(loc.accuracy_m, 2)} m (95%)")
    if loc.last_known:
        bits.append("last known position")
    return "; ".join(bits)


def build_eido(contact: Contact, options: RenderOptions | None = None) -> dict[str, Any]:
    opts = options or RenderOptions()
    ts = rfc3339(contact.created_at)
    agency = opts.domain
    agent = f"sosbridge@{opts.domain}"

    def prologue(cid: str) -> dict[str, Any]:
        return {
            "$id": cid,
            "lastUpdateTimeStamp": ts,
            "updatedByAgencyReference": _ref(agency),
            "updatedByAgentReference": _ref(agent),
        }

    incident_id = f"urn:emergency:uid:incidentid:{contact.alert_id}:{opts.domain}"
    call_id = f"urn:emergency:uid:callid:{contact.alert_id}:{opts.domain}"
    notes_id = _cid(contact, f"notes:{contact.seq}")
    alarm_id = _cid(contact, "alarm")

    additional: list[dict[str, Any]] = []

    def add_block(what: str, body: bytes | None) -> str | None:
        if body is None:
            return None
        cid = _cid(contact, f"ad:{what}")
        additional.append({**prologue(cid), "additionalDataByValue": body.decode("utf-8")})
        return cid

    provider = add_block("provider", ad.provider_info(contact, opts))
    service = add_block("service", ad.service_info(contact, opts))
    device = add_block("device", ad.device_info(contact, opts))
    subscriber = add_block("subscriber", ad.subscriber_info(contact, opts))
    call_blocks = [_ref(c) for c in (provider, service, device) if c]

    locations: list[dict[str, Any]] = []
    try:
        pidf = render_pidf(contact, opts).decode("utf-8")
    except NoLocation:
        pidf = None
    if pidf is not None:
        loc: dict[str, Any] = {
            **prologue(_cid(contact, "location")),
            "locationTypeDescriptionRegistryText": opts.location_type,
            "locationByValue": pidf,
        }
        text = _location_text(contact)
        if text:
            loc["locationDescriptionText"] = text
        locations.append(loc)
    loc_refs = [_ref(loc["$id"]) for loc in locations]

    callbacks: list[dict[str, Any]] = []
    person_comp: list[dict[str, Any]] = []
    if contact.person and contact.person.phone:
        callbacks.append(
            {
                **prologue(_cid(contact, "callback")),
                "callBackInformationUri": [f"tel:{contact.person.phone.replace(' ', '')}"],
            }
        )
    if contact.person is not None:
        person: dict[str, Any] = {
            **prologue(_cid(contact, "person")),
            "personIncidentRoleRegistryText": [opts.person_role],
            "callIdentifier": [call_id],
        }
        if loc_refs:
            person["locationReference"] = loc_refs
        if subscriber:
            person["additionalDataReference"] = [_ref(subscriber)]
        if callbacks:
            person["callBackReference"] = _ref(callbacks[0]["$id"])
        person_comp.append(person)
    person_refs = [_ref(p["$id"]) for p in person_comp]

    incident: dict[str, Any] = {
        **prologue(incident_id),
        "incidentTypeCommonRegistryText": opts.incident_types.get(
            contact.kind.value, _INCIDENT_TYPES.get(contact.kind.value, "Other")
        ),
        "incidentTypeInternalCode": contact.kind.value,
        "incidentTypeInternalText": KIND_LABELS.get(contact.kind.value, contact.kind.value),
        "incidentStatusInternalText": [contact.state.value],
        "internalIncidentId": contact.alert_id,
        "incidentPriorityInternalText": contact.severity.value,
        "agentReference": [_ref(agent)],
        "notesReference": [_ref(notes_id)],
    }
    if loc_refs:
        incident["locationReference"] = loc_refs
    if person_refs:
        incident["personReference"] = person_refs

    call: dict[str, Any] = {
        **prologue(call_id),
        "standardPrimaryCallType": opts.call_type,
        "localCallType": f"sosbridge:{contact.kind.value}",
        "direction": "incoming",
        "priorityIdentifier": _PRIORITY[contact.severity.value],
        "callStartTimestamp": rfc3339(contact.received_at),
        # A data-only alarm has no media session; a cancel ends it.
        "callStateRegistryText": "callEnd" if contact.msg_type == "cancel" else "callBegin",
        "additionalDataReference": call_blocks,
        "agentReference": [_ref(agent)],
        "notesReference": [_ref(notes_id)],
    }
    if loc_refs:
        call["locationReference"] = loc_refs
    if person_refs:
        call["personReference"] = person_refs
    if callbacks:
        call["callBackReference"] = _ref(callbacks[0]["$id"])

    doc: dict[str, Any] = {
        **prologue(incident_id),
        "eidoVersion": "1.0",
        "issuingElementIdentification": f"sosbridge.{opts.domain}",
        "incidentComponent": incident,
        "callComponent": [call],
        "agencyComponent": [
            {
                "$id": agency,
                "lastUpdateTimeStamp": ts,
                "updatedByAgencyReference": _ref(agency),
                "agencyRoleDescriptionRegistryText": [opts.agency_role],
                "agencyType": [opts.agency_type],
            }
        ],
        "agentComponent": [
            {
                **prologue(agent),
                "agentRoleRegistryText": [opts.agent_role],
                "agencyReference": _ref(agency),
            }
        ],
        "notesComponent": [
            {**prologue(notes_id), "notesActionComments": _notes_text(contact), "agentReference": _ref(agent)}
        ],
        "alarmsSensorsComponent": [
            {
                **prologue(alarm_id),
                "csaaAlarmInformation": ";".join(
                    f"{k}={v}"
                    for k, v in (
                        ("kind", contact.kind.value),
                        ("device", contact.device.id),
                        ("transport", contact.device.transport),
                        ("silent", str(contact.silent).lower()),
                        ("status", contact.status),
                        ("msg_type", contact.msg_type),
                        ("contact_id", contact.contact_id),
                    )
                ),
                "agentReference": _ref(agent),
            }
        ],
        "additionalDataComponent": additional,
    }
    if locations:
        doc["locationComponent"] = locations
    if person_comp:
        doc["personComponent"] = person_comp
    if callbacks:
        doc["callbackComponent"] = callbacks
    return doc


def render_eido(contact: Contact, options: RenderOptions | None = None) -> bytes:
    doc = build_eido(contact, options)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=False).encode("utf-8")


# --- rules the OpenAPI schema does not enforce -------------------------------------------------------


def _walk(node: Any, path: str = "$"):  # type: ignore[no-untyped-def]
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def check_eido_rules(doc: dict[str, Any]) -> list[str]:
    """Referential integrity and embedded documents (see shared NOTES/eido.md)."""
    errors: list[str] = []
    ids: dict[str, str] = {}
    for path, node in _walk(doc):
        cid = node.get("$id")
        if isinstance(cid, str) and "lastUpdateTimeStamp" in node:
            if cid in ids and path != "$" and ids[cid] != "$":
                errors.append(f"{path}: $id {cid!r} also used at {ids[cid]}")
            ids.setdefault(cid, path)
    for path, node in _walk(doc):
        ref = node.get("$ref")
        if isinstance(ref, str) and len(node) == 1 and ref not in ids:
            errors.append(f"{path}: reference {ref!r} points at no component in this EIDO")
    for i, loc in enumerate(doc.get("locationComponent") or []):
        by_value, by_ref = loc.get("locationByValue"), loc.get("locationByReferenceUrl")
        if not by_value and not by_ref:
            errors.append(f"$.locationComponent[{i}]: neither locationByValue nor locationByReferenceUrl")
        if by_value:
            errors.extend(f"$.locationComponent[{i}].locationByValue: {e}" for e in validate_pidf_text(by_value))
    for i, block in enumerate(doc.get("additionalDataComponent") or []):
        by_value, by_ref = block.get("additionalDataByValue"), block.get("additionalDataByReferenceUrl")
        if not by_value and not by_ref:
            errors.append(f"$.additionalDataComponent[{i}]: neither by value nor by reference")
        if by_value:
            errors.extend(
                f"$.additionalDataComponent[{i}].additionalDataByValue: {e}" for e in ad.check_block(by_value)
            )
    return errors
