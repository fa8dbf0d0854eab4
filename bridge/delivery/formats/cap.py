"""OASIS CAP 1.2 for a contact: Alert, then Update/Cancel chained to the original through <references>.

Determinism: a retried delivery must be byte-identical, so nothing here reads the clock. The identifier
is the contact id. `sent` of the first contact is the alert's `received_at` (when the bridge originated
the alert) and of later contacts their `created_at`; a later contact can therefore rebuild the original's
"sender,identifier,sent" triplet from its own fields without looking anything up.
"""

from __future__ import annotations

import re
from dataclasses import replace
from xml.etree import ElementTree as ET

from bridge.core.contact import Contact
from bridge.core.model import AlertKind
from bridge.delivery.formats.common import (
    CAP_DATETIME_RE,
    KIND_LABELS,
    RenderOptions,
    cap_time,
    fmt_num,
    sub,
    xml_bytes,
)
from bridge.delivery.formats.schema_loader import CAP_NS

# RFC 8876 registers CAP as an EmergencyCallData block; that is the media type PSAP-side software expects.
CONTENT_TYPE = "application/EmergencyCallData.cap+xml"
FEET_PER_METRE = 1 / 0.3048

# A message from the person is an Update of the alert whose <note> carries the text.
_MSG_TYPES = {"alert": "Alert", "update": "Update", "cancel": "Cancel", "message": "Update"}
MESSAGE_NOTE_PREFIX = "Message from the person: "
_STATUS = {"actual": "Actual", "exercise": "Exercise", "test": "Test"}
_SEVERITY = {
    "extreme": "Extreme",
    "severe": "Severe",
    "moderate": "Moderate",
    "minor": "Minor",
    "unknown": "Unknown",
}
_CATEGORY: dict[str, str] = {
    AlertKind.sos: "Rescue",
    AlertKind.panic: "Security",
    AlertKind.duress: "Security",
    AlertKind.fall: "Health",
    AlertKind.no_movement: "Health",
    AlertKind.medical: "Health",
    AlertKind.fire: "Fire",
    AlertKind.check_in_missed: "Safety",
    AlertKind.device_offline: "Infra",
    AlertKind.tamper: "Security",
    AlertKind.low_battery: "Infra",
    AlertKind.device_removed: "Security",
    AlertKind.test: "Other",
}
# Inferred events (a fall, stillness) are less certain than a pressed button.
_INFERRED = frozenset({AlertKind.fall, AlertKind.no_movement, AlertKind.check_in_missed})


def original_identifier(contact: Contact) -> str:
    return contact.references[0] if contact.references else f"{contact.alert_id}:1"


def sent_time(contact: Contact) -> str:
    return cap_time(contact.received_at if contact.seq == 1 else contact.created_at)


def reference_triplet(contact: Contact, options: RenderOptions) -> str:
    """The original alert as CAP sees it: sender,identifier,sent (its sent is the alert's received_at)."""
    return f"{options.cap_sender},{original_identifier(contact)},{cap_time(contact.received_at)}"


def _certainty(contact: Contact) -> str:
    if contact.msg_type == "cancel":
        return "Observed"
    if not contact.verified:
        return "Possible"
    return "Likely" if contact.kind in _INFERRED else "Observed"


def _parameters(info: ET.Element, contact: Contact) -> None:
    loc = contact.location
    pairs: list[tuple[str, str]] = [
        ("sosbridge:contact_id", contact.contact_id),
        ("sosbridge:alert_id", contact.alert_id),
        ("sosbridge:seq", str(contact.seq)),
        ("sosbridge:tenant", contact.tenant_id),
        ("sosbridge:device", contact.device.id),
        ("sosbridge:transport", contact.device.transport),
        ("sosbridge:kind", contact.kind.value),
        ("sosbridge:silent", "true" if contact.silent else "false"),
        ("sosbridge:verified", "true" if contact.verified else "false"),
        ("sosbridge:escalation_count", str(contact.escalation_count)),
    ]
    if contact.device.profile:
        pairs.append(("sosbridge:profile", contact.device.profile))
    if contact.language:
        pairs.append(("sosbridge:language", contact.language))
    pairs.extend(("sosbridge:communication_need", need) for need in contact.communication_needs)
    if contact.reason:
        pairs.append(("sosbridge:reason", contact.reason))
    if loc is not None:
        pairs.append(("sosbridge:location_source", loc.source))
        pairs.append(("sosbridge:last_known", "true" if loc.last_known else "false"))
        if loc.accuracy_m is not None:
            pairs.append(("sosbridge:accuracy_m", fmt_num(loc.accuracy_m, 2)))
        if loc.fix_time is not None:
            pairs.append(("sosbridge:fix_time", cap_time(loc.fix_time)))
        if loc.grid_ref:
            pairs.append(("sosbridge:bng", loc.grid_ref))
    for name, value in pairs:
        p = sub(info, "parameter")
        sub(p, "valueName", name)
        sub(p, "value", value)


def _description(contact: Contact) -> str:
    lines = [f"{KIND_LABELS.get(contact.kind.value, contact.kind.value)} from device {contact.device.id}."]
    if contact.device.label:
        lines.append(f"Device: {contact.device.label}.")
    person = contact.person
    if person and person.name:
        lines.append(f"Person: {person.name}.")
    if contact.language:
        lines.append(f"Language: {contact.language}.")
    if contact.communication_needs:
        lines.append("Communication needs: " + "; ".join(contact.communication_needs) + ".")
    if person and person.vulnerability_notes:
        lines.append(f"Notes: {person.vulnerability_notes}")
    loc = contact.location
    if loc is not None and loc.last_known:
        lines.append("Location is the last known position, not a current fix.")
    if loc is not None and loc.source == "registered_address":
        lines.append("Location is the registered address, not a device fix.")
    if contact.reason:
        lines.append(f"Reason: {contact.reason}")
    return "\n".join(lines)


def _instruction(contact: Contact) -> str | None:
    if contact.msg_type == "cancel":
        return "Alarm cancelled: stand down unless other information says otherwise."
    if contact.silent:
        return "SILENT ALARM: do not call the device or the person; do not sound anything at their end."
    return None


def _area(info: ET.Element, contact: Contact) -> None:
    loc = contact.location
    if loc is None or (not loc.has_coordinates and loc.civic is None):
        return
    area = sub(info, "area")
    desc = [loc.civic.one_line()] if loc.civic else []
    if loc.grid_ref:
        desc.append(f"OSGB {loc.grid_ref}")
    sub(area, "areaDesc", "; ".join(d for d in desc if d) or "Device location")
    if loc.has_coordinates:
        assert loc.lat is not None and loc.lon is not None
        # CAP circles are "lat,lon radius" with the radius in KILOMETRES; 0 means a point.
        radius_km = fmt_num((loc.accuracy_m or 0.0) / 1000.0, 4)
        sub(area, "circle", f"{fmt_num(loc.lat, 6)},{fmt_num(loc.lon, 6)} {radius_km}")
    if loc.grid_ref:
        g = sub(area, "geocode")
        sub(g, "valueName", "OSGB36_BNG")
        sub(g, "value", loc.grid_ref)
    if loc.civic and loc.civic.pc:
        g = sub(area, "geocode")
        sub(g, "valueName", "postcode")
        sub(g, "value", loc.civic.pc)
    if loc.altitude_m is not None:
        # CAP altitude is in feet (PIDF-LO uses metres).
        sub(area, "altitude", fmt_num(loc.altitude_m * FEET_PER_METRE, 0))


def build_cap(contact: Contact, options: RenderOptions | None = None) -> ET.Element:
    opts = options or RenderOptions()
    alert = ET.Element("alert", xmlns=CAP_NS)
    sub(alert, "identifier", contact.contact_id)
    sub(alert, "sender", opts.cap_sender)
    sub(alert, "sent", sent_time(contact))
    sub(alert, "status", _STATUS[contact.status])
    sub(alert, "msgType", _MSG_TYPES[contact.msg_type])
    sub(alert, "source", opts.agency_name)
    sub(alert, "scope", "Private")
    sub(alert, "addresses", opts.cap_addresses)
    sub(alert, "code", "sosbridge.contact/1")
    if contact.msg_type == "cancel" and contact.reason:
        sub(alert, "note", contact.reason)
    if contact.msg_type == "message" and contact.message is not None:
        sub(alert, "note", f"{MESSAGE_NOTE_PREFIX}{contact.message.text}")
    if contact.seq > 1 or contact.msg_type != "alert":
        sub(alert, "references", reference_triplet(contact, opts))
    sub(alert, "incidents", contact.alert_id)

    info = sub(alert, "info")
    # <language> is the language of this info block's text (ours is English); the person's own
    # language travels as the sosbridge:language parameter.
    sub(info, "language", opts.default_language)
    sub(info, "category", _CATEGORY.get(contact.kind, "Other"))
    sub(info, "event", KIND_LABELS.get(contact.kind.value, contact.kind.value))
    if contact.msg_type == "cancel":
        sub(info, "responseType", "AllClear")
    sub(info, "urgency", "Past" if contact.msg_type == "cancel" else "Immediate")
    sub(info, "severity", _SEVERITY[contact.severity.value])
    sub(info, "certainty", _certainty(contact))
    ec = sub(info, "eventCode")
    sub(ec, "valueName", "sosbridge:kind")
    sub(ec, "value", contact.kind.value)
    sub(info, "onset", cap_time(contact.occurred_at))
    sub(info, "senderName", opts.agency_name)
    prefix = {"update": "UPDATE: ", "cancel": "CANCELLED: ", "message": "MESSAGE FROM THE PERSON: "}.get(
        contact.msg_type, "")
    sub(info, "headline", f"{prefix}{KIND_LABELS.get(contact.kind.value, contact.kind.value)}")
    sub(info, "description", _description(contact))
    instruction = _instruction(contact)
    if instruction:
        sub(info, "instruction", instruction)
    if contact.links.ack:
        sub(info, "web", contact.links.ack)
    if contact.person and contact.person.phone:
        sub(info, "contact", contact.person.phone)
    _parameters(info, contact)
    _area(info, contact)
    return alert


def render_cap(contact: Contact, options: RenderOptions | None = None) -> bytes:
    return xml_bytes(build_cap(contact, options))


def build_cap_rfc8876(contact: Contact, sender_uri: str, recipient: str,
                      options: RenderOptions | None = None) -> ET.Element:
    """The CAP profile of RFC 8876 §4.2 for a SIP MESSAGE from `sender_uri` to `recipient`.

    `<sender>` is the bridge's SIP URI (also in <references>, so an Update still names the original);
    `<incidents>` is always the alert id (unique per sender); `<area>` is left out because the location
    travels in the PIDF-LO part; device data stays in `<parameter>`. RFC 8876 says not to use
    `<addresses>` while CAP 1.2 requires it for `scope` Private: we keep `Private` (the alert concerns one
    person and must not be broadcast) and give `<addresses>` the one recipient, the SIP Request-URI, so
    the document stays CAP-valid and the address adds nothing SIP routing did not already say.
    """
    opts = replace(options or RenderOptions(), sender=sender_uri, cap_addresses=recipient)
    root = build_cap(contact, opts)
    info = root.find("info")  # build_cap writes unqualified tags under a default xmlns
    if info is not None:
        for area in info.findall("area"):
            info.remove(area)
    return root


def render_cap_rfc8876(contact: Contact, sender_uri: str, recipient: str,
                       options: RenderOptions | None = None) -> bytes:
    return xml_bytes(build_cap_rfc8876(contact, sender_uri, recipient, options))


# --- rules the XSD does not enforce (CAP 1.2 spec prose; see shared NOTES/cap-1.2.md) ---------------

_BAD_ID_CHARS = re.compile(r"[\s,<&]")
_PAIR = r"[-+]?\d+(\.\d+)?,[-+]?\d+(\.\d+)?"
_CIRCLE_RE = re.compile(rf"^{_PAIR}\s+\d+(\.\d+)?$")


def _t(el: ET.Element, tag: str) -> str | None:
    return el.findtext(f"{{{CAP_NS}}}{tag}")


def check_cap_rules(root: ET.Element) -> list[str]:
    errors: list[str] = []
    if root.tag != f"{{{CAP_NS}}}alert":
        return [f"root element is {root.tag}, expected CAP 1.2 alert"]
    for tag in ("identifier", "sender"):
        value = _t(root, tag) or ""
        if _BAD_ID_CHARS.search(value):
            errors.append(f"{tag} {value!r} contains a space, comma, '<' or '&'")
    for el in root.iter():
        if el.tag.split("}")[-1] in ("sent", "effective", "onset", "expires"):
            text = (el.text or "").strip()
            if not CAP_DATETIME_RE.match(text):
                errors.append(f"{el.tag.split('}')[-1]} {text!r} is not a CAP date-time")
            elif text.endswith("+00:00"):
                errors.append(f"{el.tag.split('}')[-1]} {text!r}: CAP writes UTC as -00:00")
    scope = _t(root, "scope")
    if scope == "Private" and not (_t(root, "addresses") or "").strip():
        errors.append("scope Private requires <addresses>")
    if scope == "Restricted" and not (_t(root, "restriction") or "").strip():
        errors.append("scope Restricted requires <restriction>")
    msg_type = _t(root, "msgType")
    refs = (_t(root, "references") or "").split()
    if msg_type in ("Update", "Cancel", "Ack", "Error") and not refs:
        errors.append(f"msgType {msg_type} must reference the earlier message in <references>")
    for ref in refs:
        parts = ref.split(",")
        if len(parts) != 3 or not all(parts) or not CAP_DATETIME_RE.match(parts[2]):
            errors.append(f"reference {ref!r} is not sender,identifier,sent")
    for circle in root.iter(f"{{{CAP_NS}}}circle"):
        text = (circle.text or "").strip()
        if not _CIRCLE_RE.match(text):
            errors.append(f"circle {text!r} is not 'lat,lon radius_km'")
            continue
        lat, lon = (float(v) for v in text.split()[0].split(","))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            errors.append(f"circle {text!r} is out of range (latitude first)")
    for polygon in root.iter(f"{{{CAP_NS}}}polygon"):
        pairs = (polygon.text or "").split()
        if len(pairs) < 4 or pairs[0] != pairs[-1] or not all(re.fullmatch(_PAIR, p) for p in pairs):
            errors.append("polygon needs at least 4 lat,lon pairs with the first equal to the last")
    return errors
