"""XML renderings checked against their schema and the rules the XSD cannot express (PIDF-LO here; CAP
through `validate_xml` from bridge/delivery/formats/validate.py). See docs/platform/standards.md.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree as ET

from bridge.delivery.formats.pidf import check_pidf_rules
from bridge.delivery.formats.schema_loader import PIDF_NS, pidf_schema

MAX_ERRORS = 50
_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)


def parse_xml(body: bytes) -> tuple[ET.Element | None, list[str]]:
    # None of our formats use a DTD; refusing them shuts out entity-expansion attacks on the receiver.
    if _DOCTYPE.search(body):
        return None, ["XML with a DOCTYPE or ENTITY declaration is refused"]
    try:
        return ET.fromstring(body), []
    except ET.ParseError as exc:
        return None, [f"not well-formed XML: {exc}"]


def _xsd_errors(schema: Any, text: str) -> list[str]:
    out: list[str] = []
    for err in schema.iter_errors(text):
        out.append(f"{err.path or '/'}: {err.reason or err.message}")
        if len(out) >= MAX_ERRORS:
            break
    return out


def validate_xml(body: bytes, root_tag: str, what: str, schema: Any, rules: Any) -> list[str]:
    """Parse, check the root element, then the XSD and the rules the XSD cannot express."""
    root, errors = parse_xml(body)
    if root is None:
        return errors
    if root.tag != root_tag:
        return [f"root element is {root.tag}, expected {what}"]
    return _xsd_errors(schema, body.decode("utf-8")) + rules(root)


def validate_pidf_text(text: str) -> list[str]:
    return validate_pidf(text.encode("utf-8"))


def validate_pidf(body: bytes) -> list[str]:
    return validate_xml(body, f"{{{PIDF_NS}}}presence", "PIDF presence", pidf_schema(), check_pidf_rules)
