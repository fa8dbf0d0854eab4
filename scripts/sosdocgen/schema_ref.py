"""docs/reference/contact-schema.md: the `sosbridge.contact/1` envelope, from its JSON Schema."""

from __future__ import annotations

import json
from typing import Any

from bridge.core.contact import contact_json_schema


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = str(prop["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"array of {_type(prop.get('items', {}))}"
    if kind == "object" and "additionalProperties" in prop and isinstance(prop["additionalProperties"], dict):
        return f"object of {_type(prop['additionalProperties'])}"
    fmt = f" ({prop['format']})" if "format" in prop else ""
    return f"{kind}{fmt}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(title: str, schema: dict[str, Any], level: str) -> list[str]:
    lines = [f"{level} {title}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    props = schema.get("properties")
    if not props:
        if "enum" in schema:
            lines += ["One of: " + ", ".join(f"`{v}`" for v in schema["enum"]), ""]
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | meaning |", "| --- | --- | --- | --- |"]
    for name, prop in props.items():
        meaning = prop.get("description") or prop.get("title", "")
        if "default" in prop and prop["default"] not in (None, [], {}):
            meaning = f"{meaning} (default `{json.dumps(prop['default'])}`)".strip()
        lines.append(
            f"| `{name}` | {_cell(_type(prop))} | {'yes' if name in required else ''} | {_cell(meaning)} |"
        )
    return [*lines, ""]


def contact_schema_page() -> str:
    schema = contact_json_schema()
    lines = [
        "# Contact schema",
        "",
        "Every contact the bridge delivers in the `json` format is this envelope (`sosbridge schema` prints",
        "the JSON Schema, and `GET /v1/schema/contact` serves it). CAP, EIDO and PIDF-LO renderings carry",
        "the same facts: see [CAP, EIDO and PIDF-LO](../platform/standards.md).",
        "",
    ]
    lines += _table("Contact", schema, "##")
    for name, sub in sorted(schema.get("$defs", {}).items()):
        lines += _table(name, sub, "##")
    lines += [
        "## The JSON Schema",
        "",
        "```json",
        json.dumps(schema, indent=2, sort_keys=True),
        "```",
    ]
    return "\n".join(lines) + "\n"
