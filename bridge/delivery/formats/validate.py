"""Validate a body in any of our formats: the standard's schema first, then the rules it leaves out.

Used by the reference receiver on every delivery and by the tests on every rendered document.
Returns human-readable error strings; an empty list means valid. jsonschema and xmlschema are imported
on the first validation, so a bridge that only renders never loads them.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bridge.core.contact import Contact
from bridge.delivery.formats.cap import check_cap_rules
from bridge.delivery.formats.common import RFC3339_RE
from bridge.delivery.formats.eido import check_eido_rules
from bridge.delivery.formats.schema_loader import CAP_NS, PIDF_NS, cap_schema, eido_json_schema
from bridge.delivery.formats.xml_check import MAX_ERRORS, parse_xml, validate_pidf, validate_pidf_text, validate_xml

CAP_TYPES = frozenset(
    {"application/emergencycalldata.cap+xml", "application/cap+xml", "application/common-alerting-protocol+xml"}
)
PIDF_TYPES = frozenset({"application/pidf+xml"})
EIDO_TYPES = frozenset({"application/emergency.eido+json"})
JSON_TYPES = frozenset({"application/json", "application/vnd.sosbridge.contact+json"})
GENERIC_XML = frozenset({"application/xml", "text/xml"})

if TYPE_CHECKING:
    import jsonschema



def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def validate_cap(body: bytes) -> list[str]:
    return validate_xml(body, f"{{{CAP_NS}}}alert", "CAP 1.2 alert", cap_schema(), check_cap_rules)


def _format_checker() -> jsonschema.FormatChecker:
    import jsonschema

    checker = jsonschema.FormatChecker()

    # jsonschema only checks date-time when an optional package is installed; check RFC 3339 ourselves.
    @checker.checks("date-time")
    def _dt(value: object) -> bool:
        return not isinstance(value, str) or bool(RFC3339_RE.match(value))

    @checker.checks("uri")
    def _uri(value: object) -> bool:
        return not isinstance(value, str) or bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", value))

    return checker


@lru_cache(maxsize=1)
def _eido_validator() -> jsonschema.Draft7Validator:
    import jsonschema

    return jsonschema.Draft7Validator(eido_json_schema(), format_checker=_format_checker())


def validate_eido_doc(doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return ["EIDO must be a JSON object"]
    errors = []
    for err in _eido_validator().iter_errors(doc):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        errors.append(f"{path}: {err.message}")
        if len(errors) >= MAX_ERRORS:
            return errors
    return errors + check_eido_rules(doc)


def _load_json(body: bytes) -> tuple[Any, list[str]]:
    try:
        return json.loads(body), []
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"not valid JSON: {exc}"]


def validate_eido(body: bytes) -> list[str]:
    doc, errors = _load_json(body)
    return errors or validate_eido_doc(doc)


def validate_contact(body: bytes) -> list[str]:
    try:
        Contact.model_validate_json(body)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()][:MAX_ERRORS]
    return []


def validate(body: bytes, content_type: str) -> list[str]:
    mt = media_type(content_type)
    if mt in CAP_TYPES:
        return validate_cap(body)
    if mt in PIDF_TYPES:
        return validate_pidf(body)
    if mt in EIDO_TYPES:
        return validate_eido(body)
    if mt in JSON_TYPES:
        doc, errors = _load_json(body)
        if errors:
            return errors
        # A platform posting EIDO as plain JSON is common enough to recognise by its version field.
        if isinstance(doc, dict) and "eidoVersion" in doc:
            return validate_eido_doc(doc)
        return validate_contact(body)
    if mt in GENERIC_XML:
        root, errors = parse_xml(body)
        if root is None:
            return errors
        if root.tag == f"{{{CAP_NS}}}alert":
            return validate_cap(body)
        if root.tag == f"{{{PIDF_NS}}}presence":
            return validate_pidf(body)
        return [f"unrecognised XML document {root.tag}"]
    return [f"unsupported content type {content_type!r}"]


__all__ = ["media_type", "validate", "validate_cap", "validate_contact", "validate_eido", "validate_eido_doc",
           "validate_pidf", "validate_pidf_text"]
