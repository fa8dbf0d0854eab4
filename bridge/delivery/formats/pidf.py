"""PIDF-LO (RFC 3863/4479/4119/5139/5491/7459) for a contact's location.

Shape: a `gs:Circle` whose radius is the 95 % uncertainty in metres with an explicit
`con:confidence pdf="normal">95`, or a bare `gml:Point` when the accuracy is unknown (a confidence on a
point would claim a certainty nobody measured). Location is device-centric (RFC 5491 §3.1): it sits in a
`dm:device` with the device's URN and the fix time. A registered address travels as an RFC 5139 civic
address next to its coordinates, since both describe the same place.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote
from xml.etree import ElementTree as ET

from bridge.core.contact import Contact
from bridge.core.model import CivicAddress, Location
from bridge.delivery.formats.common import (
    METHOD_TOKENS,
    RenderOptions,
    device_urn,
    fmt_num,
    ncname,
    rfc3339,
    sub,
    xml_bytes,
)
from bridge.delivery.formats.schema_loader import CA_NS, CON_NS, DM_NS, GBP_NS, GML_NS, GP_NS, GS_NS, PIDF_NS

CONTENT_TYPE = "application/pidf+xml"
CRS_2D = "urn:ogc:def:crs:EPSG::4326"
CRS_3D = "urn:ogc:def:crs:EPSG::4979"
UOM_METRE = "urn:ogc:def:uom:EPSG::9001"
CONFIDENCE = "95"  # Location.accuracy_m is defined as the radius of the 95 % circle.
RETENTION = timedelta(days=1)

# Sources whose coordinates are those of the registered (civic) address itself.
_CIVIC_SOURCES = frozenset({"registered_address", "fixed"})


class NoLocation(ValueError):
    """The contact carries no location, so there is nothing to put in a PIDF-LO."""


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _civic(parent: ET.Element, civic: CivicAddress, lang: str) -> None:
    ca = sub(parent, _q(CA_NS, "civicAddress"), **{"{http://www.w3.org/XML/1998/namespace}lang": lang})
    # RFC 5139 order matters (xs:sequence); RD is the RFC 5139 road name (A6 is the legacy slot).
    for tag, value in (
        ("country", civic.country.upper()),
        ("A1", civic.a1),
        ("A2", civic.a2),
        ("A3", civic.a3),
        ("RD", civic.a6),
        ("HNO", civic.hno),
        ("LOC", civic.loc),
        ("NAM", civic.nam),
        ("PC", civic.pc),
    ):
        if value:
            sub(ca, _q(CA_NS, tag), value)


def _shape(parent: ET.Element, loc: Location) -> None:
    assert loc.lat is not None and loc.lon is not None
    pos = f"{fmt_num(loc.lat, 7)} {fmt_num(loc.lon, 7)}"
    if loc.accuracy_m is None:
        point = sub(parent, _q(GML_NS, "Point"), srsName=CRS_2D)
        sub(point, _q(GML_NS, "pos"), pos)
        return
    circle = sub(parent, _q(GS_NS, "Circle"), srsName=CRS_2D)
    sub(circle, _q(GML_NS, "pos"), pos)
    sub(circle, _q(GS_NS, "radius"), fmt_num(loc.accuracy_m, 2), uom=UOM_METRE)
    sub(parent, _q(CON_NS, "confidence"), CONFIDENCE, pdf="normal")


def _geopriv(parent: ET.Element, contact: Contact, method: str) -> ET.Element:
    gp = sub(parent, _q(GP_NS, "geopriv"))
    info = sub(gp, _q(GP_NS, "location-info"))
    rules = sub(gp, _q(GP_NS, "usage-rules"))
    # The police platform must be able to pass the location on to responders, but not keep it for ever.
    sub(rules, _q(GBP_NS, "retransmission-allowed"), "true")
    sub(rules, _q(GBP_NS, "retention-expiry"), rfc3339(contact.created_at + RETENTION))
    sub(gp, _q(GP_NS, "method"), method)
    return info


def build_pidf(contact: Contact, options: RenderOptions | None = None) -> ET.Element:
    opts = options or RenderOptions()
    loc = contact.location
    if loc is None or (not loc.has_coordinates and loc.civic is None):
        raise NoLocation(f"contact {contact.contact_id} has no location")
    lang = opts.default_language
    presence = ET.Element(
        "presence",
        xmlns=PIDF_NS,
        entity=f"pres:{quote(contact.device.id, safe='._-')}@{opts.domain}",
    )
    device = sub(presence, _q(DM_NS, "device"), id=ncname("d-", contact.device.id))
    method = METHOD_TOKENS.get(loc.source, "Derived")
    if loc.has_coordinates:
        info = _geopriv(device, contact, method)
        _shape(info, loc)
        if loc.civic is not None and loc.source in _CIVIC_SOURCES:
            _civic(info, loc.civic, lang)
    if loc.civic is not None and (not loc.has_coordinates or loc.source not in _CIVIC_SOURCES):
        # A civic address for a different place than the fix gets its own geopriv (RFC 5491 §3.4).
        _civic(_geopriv(device, contact, "Manual"), loc.civic, lang)
    sub(device, _q(DM_NS, "deviceID"), device_urn(contact))
    stamp = loc.fix_time or contact.occurred_at
    sub(device, _q(DM_NS, "timestamp"), rfc3339(stamp))
    return presence


def render_pidf(contact: Contact, options: RenderOptions | None = None) -> bytes:
    return xml_bytes(build_pidf(contact, options))


# --- rules the XSDs do not enforce -------------------------------------------------------------------

_GEOPRIV_CHILD_NS = {GP_NS}
_SHAPES = {_q(GML_NS, "Point"), _q(GML_NS, "Polygon")} | {
    _q(GS_NS, s) for s in ("Circle", "Ellipse", "ArcBand", "Sphere", "Ellipsoid", "Prism")
}
_URN_RE = re.compile(r"^urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:\S+$", re.IGNORECASE)
_NUM = r"[-+]?\d+(\.\d+)?"


def check_pidf_rules(root: ET.Element) -> list[str]:
    """Semantic checks on a schema-valid PIDF-LO (see shared NOTES/pidf-lo.md)."""
    errors: list[str] = []
    if root.tag != _q(PIDF_NS, "presence"):
        return [f"root element is {root.tag}, expected PIDF presence"]
    geoprivs = list(root.iter(_q(GP_NS, "geopriv")))
    if not geoprivs:
        errors.append("no gp:geopriv element: the document carries no location")
    for dev in root.iter(_q(DM_NS, "device")):
        did = dev.findtext(_q(DM_NS, "deviceID"), default="").strip()
        if not _URN_RE.match(did):
            errors.append(f"dm:deviceID {did!r} is not a URN")
    for gp in geoprivs:
        for child in gp:
            ns = child.tag[1:].split("}")[0] if child.tag.startswith("{") else ""
            if ns in (PIDF_NS, DM_NS, ""):
                # Lax ##other wildcards let a misplaced element through the XSD (e.g. <method> in the
                # PIDF namespace); a receiver would silently ignore it.
                errors.append(f"{child.tag} inside gp:geopriv is not in the geopriv namespace")
        info = gp.find(_q(GP_NS, "location-info"))
        if info is None:
            continue
        shapes = [el for el in info if el.tag in _SHAPES]
        civics = info.findall(_q(CA_NS, "civicAddress"))
        if len(shapes) > 1:
            errors.append("more than one shape in one location-info (RFC 5491 allows one)")
        if not shapes and not civics:
            errors.append("location-info holds neither a shape nor a civic address")
        for shape in shapes:
            errors.extend(_check_shape(shape))
        conf = info.find(_q(CON_NS, "confidence"))
        if conf is not None and shapes and shapes[0].tag == _q(GML_NS, "Point"):
            errors.append("con:confidence on a point: a point has no uncertainty region")
        for civic in civics:
            country = civic.findtext(_q(CA_NS, "country"), default="")
            if country == "UK":
                errors.append("civic country 'UK' is not ISO 3166-1 alpha-2; use 'GB'")
    return errors


def _check_shape(shape: ET.Element) -> list[str]:
    errors: list[str] = []
    srs = shape.get("srsName", "")
    if srs not in (CRS_2D, CRS_3D):
        errors.append(f"{shape.tag} srsName {srs!r} is not EPSG::4326 or EPSG::4979")
    for pos in shape.iter(_q(GML_NS, "pos")):
        parts = (pos.text or "").split()
        want = 3 if srs == CRS_3D else 2
        if len(parts) != want or not all(re.fullmatch(_NUM, p) for p in parts):
            errors.append(f"gml:pos {pos.text!r} needs {want} numbers, latitude first")
            continue
        lat, lon = float(parts[0]), float(parts[1])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            errors.append(f"gml:pos {pos.text!r} is out of range (latitude first, WGS 84)")
    for tag in ("radius", "semiMajorAxis", "semiMinorAxis", "innerRadius", "outerRadius", "height"):
        for el in shape.iter(_q(GS_NS, tag)):
            if el.get("uom") != UOM_METRE:
                errors.append(f"gs:{tag} must be in metres (uom {UOM_METRE})")
            try:
                if float((el.text or "").strip()) < 0:
                    errors.append(f"gs:{tag} is negative")
            except ValueError:
                errors.append(f"gs:{tag} {el.text!r} is not a number")
    return errors
