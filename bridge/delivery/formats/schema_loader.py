"""Load the standards' schemas shipped inside the package (bridge/delivery/formats/schemas/), fully offline.

The upstream PIDF-LO schemas import xml.xsd from w3.org and geopriv10.xsd imports basicPolicy with no
location at all, so every namespace is mapped to a local file and remote access is refused: a validator
that silently fetched schemas from the network would behave differently on an air-gapped receiver.
xmlschema (with elementpath, ~11 MB resident) is imported on the first schema load, never by a bridge that
only renders: rendering needs the namespace names only.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import xmlschema

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
GP_NS = "urn:ietf:params:xml:ns:pidf:geopriv10"
GBP_NS = "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
CA_NS = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
GML_NS = "http://www.opengis.net/gml"
GS_NS = "http://www.opengis.net/pidflo/1.0"
CON_NS = "urn:ietf:params:xml:ns:geopriv:conf"

EIDO_ROOT = "EmergencyIncidentDataObjectType"


def schema_dir() -> Path:
    # The package is installed unzipped (editable or wheel), so the traversable is a real directory.
    with as_file(files("bridge.delivery.formats.schemas")) as path:
        return Path(path)


@lru_cache(maxsize=1)
def cap_schema() -> xmlschema.XMLSchema:
    import xmlschema

    return xmlschema.XMLSchema(str(schema_dir() / "cap" / "CAP-v1.2.xsd"), allow="local")


@lru_cache(maxsize=1)
def pidf_schema() -> xmlschema.XMLSchema:
    import xmlschema

    base = schema_dir() / "pidf"
    schema = xmlschema.XMLSchema(str(base / "pidf.xsd"), build=False, allow="local")
    for ns, rel in (
        (DM_NS, "data-model.xsd"),
        (GBP_NS, "basicPolicy.xsd"),
        (GP_NS, "geopriv10.xsd"),
        (CA_NS, "civicAddr.xsd"),
        (CON_NS, "confidence.xsd"),
        (GML_NS, "gml_geoshape/geometryPrimitives.xsd"),
        (GS_NS, "gml_geoshape/GML-pidf-lo-shape.xsd"),
    ):
        schema.import_schema(ns, str(base / rel))
    schema.build()
    return schema


def _fix_openapi_quirks(node: Any) -> Any:
    """Repair NENA's YAML so a JSON Schema validator can run it (see shared NOTES/eido.md).

    * AgentType says `minItems: 1,`, which YAML reads as the string "1,".
    * `NIEMComponents/...` refs point at files whose own refs (ncic.yaml, niem-xs.yaml, j.yaml) are not
      published with the schema; they are replaced by an open schema, which the bridge never emits anyway.
    * OpenAPI's `nullable` and `example` keywords are not JSON Schema; they are harmless and left alone.
    """
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("minItems", "maxItems", "minLength", "maxLength") and isinstance(value, str):
                out[key] = int(value.strip().rstrip(","))
            elif key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                return {"description": f"external NIEM reference not validated: {value}"}
            else:
                out[key] = _fix_openapi_quirks(value)
        return out
    if isinstance(node, list):
        return [_fix_openapi_quirks(v) for v in node]
    return node


@lru_cache(maxsize=1)
def eido_openapi() -> dict[str, Any]:
    with open(schema_dir() / "eido" / "openapi.yaml", encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    return _fix_openapi_quirks(raw)


def eido_json_schema() -> dict[str, Any]:
    """A Draft-7 schema whose root is EmergencyIncidentDataObjectType; refs stay `#/components/...`."""
    doc = copy.deepcopy(eido_openapi())
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "components": doc["components"],
        "$ref": f"#/components/schemas/{EIDO_ROOT}",
    }
