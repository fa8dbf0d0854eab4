"""Helpers shared by the CAP, PIDF-LO and EIDO formatters: time formats, identifiers, options."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from bridge.core.contact import Contact
from bridge.delivery.formats.schema_loader import CA_NS, CON_NS, DM_NS, GBP_NS, GML_NS, GP_NS, GS_NS

# ElementTree's prefix registry is global; registering the usual prefixes keeps documents readable.
for _prefix, _ns in (
    ("dm", DM_NS),
    ("gp", GP_NS),
    ("gbp", GBP_NS),
    ("ca", CA_NS),
    ("gml", GML_NS),
    ("gs", GS_NS),
    ("con", CON_NS),
):
    ET.register_namespace(_prefix, _ns)

# CAP 1.2 §3.3.2: no "Z", no fractional seconds, an explicit offset (the XSD pattern enforces the shape).
CAP_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[-+]\d{2}:\d{2}$")
RFC3339_RE = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$",
    re.IGNORECASE,
)

# One namespace for every deterministic UUID the formatters derive (device URNs, EIDO component ids).
_UUID_NS = uuid.UUID("6b1f0d1e-52f3-4c53-9a8e-5b0e7c1d2a90")


@dataclass(frozen=True)
class RenderOptions:
    """Who the bridge says it is in standards documents. Defaults are safe placeholders.

    `domain` names the bridge operator (EIDO agency id, CAP sender, PIDF entity domain); set it from the
    public URL or explicitly so the police platform can tell bridges apart.
    """

    domain: str = "sosbridge.invalid"
    sender: str | None = None
    cap_addresses: str = "police-contact-platform"
    default_language: str = "en-GB"
    agency_name: str = "SOS Bridge"
    # NENA registry values: configurable because the registries are not published with the schema.
    agency_role: str = "AlarmMonitoring"
    agency_type: str = "alarm_monitoring"
    agent_role: str = "Automated"
    location_type: str = "Caller"
    person_role: str = "Caller"
    call_type: str = "emergency"
    incident_types: dict[str, str] = field(default_factory=dict)

    @property
    def cap_sender(self) -> str:
        return self.sender or f"sosbridge@{self.domain}"


def options_from_settings(settings: Any) -> RenderOptions:
    """Derive the operator domain from `Settings.public_url` when it names a real host."""
    url = getattr(settings, "public_url", None)
    host = urlsplit(url).hostname if url else None
    if host and host not in ("127.0.0.1", "localhost", "::1"):
        return RenderOptions(domain=host)
    return RenderOptions()


def utc(dt: datetime) -> datetime:
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def cap_time(dt: datetime) -> str:
    """CAP wants whole seconds and writes UTC as -00:00 (the spec forbids "Z")."""
    return utc(dt).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S") + "-00:00"


def rfc3339(dt: datetime) -> str:
    """Millisecond RFC 3339 in UTC, e.g. 2026-01-01T12:00:00.123Z (EIDO, PIDF timestamps)."""
    d = utc(dt)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def det_uuid(*parts: str) -> uuid.UUID:
    return uuid.uuid5(_UUID_NS, "\x1f".join(parts))


def device_urn(contact: Contact) -> str:
    """A stable URN for the device (RFC 4479 needs a URN): urn:uuid derived from tenant and device id.

    The bridge id itself is not a URN and hardware ids (IMEI, DevEUI) are not in the contact, so a
    name-based UUID keeps the PIDF valid and the same device always gets the same deviceID.
    """
    return f"urn:uuid:{det_uuid('device', contact.tenant_id, contact.device.id)}"


def ncname(prefix: str, value: str) -> str:
    """xs:ID values must be NCNames: no leading digit, no colon."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", value)
    return f"{prefix}{safe}"


def fmt_num(value: float, places: int) -> str:
    """Fixed-point without trailing zeros or exponent; deterministic across platforms."""
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def xml_bytes(root: ET.Element) -> bytes:
    """Serialise deterministically. Elements of the document's default namespace are built with bare
    tags under an explicit `xmlns` attribute on the root: ElementTree's default_namespace option refuses
    unqualified attributes, and an unprefixed default namespace is what naive receivers expect."""
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


KIND_LABELS: dict[str, str] = {
    "sos": "SOS alarm",
    "panic": "Panic alarm",
    "duress": "Duress alarm",
    "fall": "Fall detected",
    "no_movement": "No movement detected",
    "medical": "Medical alarm",
    "fire": "Fire alarm",
    "check_in_missed": "Missed check-in",
    "device_offline": "Device offline",
    "tamper": "Device tamper",
    "low_battery": "Low battery",
    "device_removed": "Device removed",
    "test": "Test alarm",
}

# IANA "Method Tokens" registry values for each bridge location source.
METHOD_TOKENS: dict[str, str] = {
    "gnss": "GPS",
    "wifi": "802.11",
    "cell": "Cell",
    "fixed": "Manual",
    "registered_address": "Manual",
    "last_known": "Derived",
    "network": "Derived",
}
