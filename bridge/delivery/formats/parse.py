"""Read the contact summary back out of a CAP, EIDO or PIDF-LO body (what the reference receiver stores).

The result mirrors the JSON envelope's field names (alert_id, contact_id, seq, msg_type, status, kind,
severity, silent, tenant_id, device.id, location.lat/lon/accuracy_m/grid_ref), so tests and tools can
treat contacts alike whatever format the route used. Fields a format does not carry are left out.
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from bridge.delivery.formats.schema_loader import CAP_NS, GML_NS, GS_NS, PIDF_NS
from bridge.delivery.formats.validate import (
    CAP_TYPES,
    EIDO_TYPES,
    GENERIC_XML,
    JSON_TYPES,
    PIDF_TYPES,
    media_type,
)

_CAP_MSG = {"Alert": "alert", "Update": "update", "Cancel": "cancel"}


def _c(tag: str) -> str:
    return f"{{{CAP_NS}}}{tag}"


def _pidf_point(root: ET.Element) -> dict[str, Any] | None:
    for shape in root.iter():
        if shape.tag in (f"{{{GS_NS}}}Circle", f"{{{GML_NS}}}Point"):
            pos = (shape.findtext(f"{{{GML_NS}}}pos") or "").split()
            if len(pos) < 2:
                return None
            out: dict[str, Any] = {"lat": float(pos[0]), "lon": float(pos[1]), "accuracy_m": None}
            radius = shape.findtext(f"{{{GS_NS}}}radius")
            if radius:
                out["accuracy_m"] = float(radius)
            return out
    return None


def parse_cap(root: ET.Element) -> dict[str, Any]:
    params: dict[str, str] = {}
    info = root.find(_c("info"))
    if info is not None:
        for p in info.findall(_c("parameter")):
            params.setdefault(p.findtext(_c("valueName")) or "", p.findtext(_c("value")) or "")
    out: dict[str, Any] = {
        "format": "cap",
        "identifier": root.findtext(_c("identifier")),
        "sent": root.findtext(_c("sent")),
        "references": (root.findtext(_c("references")) or "").split(),
        "contact_id": params.get("sosbridge:contact_id"),
        "alert_id": params.get("sosbridge:alert_id") or root.findtext(_c("incidents")),
        "msg_type": _CAP_MSG.get(root.findtext(_c("msgType")) or "", "unknown"),
        "status": (root.findtext(_c("status")) or "").lower(),
        "kind": params.get("sosbridge:kind"),
        "silent": params.get("sosbridge:silent") == "true",
        "tenant_id": params.get("sosbridge:tenant"),
        "device": {"id": params.get("sosbridge:device")},
    }
    if "sosbridge:seq" in params:
        out["seq"] = int(params["sosbridge:seq"])
    if info is not None:
        out["severity"] = (info.findtext(_c("severity")) or "").lower()
        circle = info.findtext(f"{_c('area')}/{_c('circle')}")
        if circle:
            centre, _, radius_km = circle.strip().partition(" ")
            lat, lon = (float(v) for v in centre.split(","))
            out["location"] = {
                "lat": lat,
                "lon": lon,
                "accuracy_m": float(params["sosbridge:accuracy_m"]) if "sosbridge:accuracy_m" in params else None,
                "radius_km": float(radius_km or 0),
                "grid_ref": params.get("sosbridge:bng"),
            }
    return out


def parse_eido(doc: dict[str, Any]) -> dict[str, Any]:
    incident = doc.get("incidentComponent") or {}
    alarm: dict[str, Any] = next(iter(doc.get("alarmsSensorsComponent") or []), {})
    summary = dict(
        part.split("=", 1) for part in (alarm.get("csaaAlarmInformation") or "").split(";") if "=" in part
    )
    out: dict[str, Any] = {
        "format": "eido",
        "eido_id": doc.get("$id"),
        "contact_id": summary.get("contact_id"),
        "alert_id": incident.get("internalIncidentId"),
        "msg_type": summary.get("msg_type", "unknown"),
        "status": summary.get("status"),
        "kind": summary.get("kind") or incident.get("incidentTypeInternalCode"),
        "severity": incident.get("incidentPriorityInternalText"),
        "silent": summary.get("silent") == "true",
        "device": {"id": summary.get("device")},
    }
    cid = summary.get("contact_id") or ""
    if cid.rpartition(":")[2].isdigit():
        out["seq"] = int(cid.rpartition(":")[2])
    loc = next(iter(doc.get("locationComponent") or []), None)
    if loc and loc.get("locationByValue"):
        try:
            point = _pidf_point(ET.fromstring(loc["locationByValue"].encode("utf-8")))
        except ET.ParseError:
            point = None
        if point:
            out["location"] = point
    return out


def parse_incoming(body: bytes, content_type: str) -> dict[str, Any] | None:
    """A contact-shaped summary of the body, or None when it cannot be read at all."""
    mt = media_type(content_type)
    try:
        if mt in EIDO_TYPES or mt in JSON_TYPES:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                return None
            return parse_eido(doc) if "eidoVersion" in doc else doc
        if mt in CAP_TYPES | PIDF_TYPES | GENERIC_XML:
            if b"<!DOCTYPE" in body.upper():
                return None
            root = ET.fromstring(body)
            if root.tag == _c("alert"):
                return parse_cap(root)
            if root.tag == f"{{{PIDF_NS}}}presence":
                return {"format": "pidf", "entity": root.get("entity"), "location": _pidf_point(root)}
    except (ValueError, ET.ParseError):
        return None
    return None
