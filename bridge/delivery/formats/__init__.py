"""Contacts in the open emergency standards: our JSON, OASIS CAP 1.2, NENA EIDO (JSON) and PIDF-LO.

`render(contact, fmt)` gives (body, content type); `validate(body, content_type)` gives a list of
errors (empty = valid) and is what the reference receiver runs on every delivery. Rendering never reads
the clock, so a retried delivery is byte-identical to the first attempt.
"""

from __future__ import annotations

from typing import Literal

from bridge.core.contact import Contact
from bridge.delivery.formats import cap, eido, pidf
from bridge.delivery.formats.common import RenderOptions, options_from_settings
from bridge.delivery.formats.parse import parse_incoming
from bridge.delivery.formats.validate import media_type, validate

Format = Literal["json", "cap", "eido", "pidf"]
FORMATS: tuple[Format, ...] = ("json", "cap", "eido", "pidf")
JSON_CONTENT_TYPE = "application/json"

CONTENT_TYPES: dict[str, str] = {
    "json": JSON_CONTENT_TYPE,
    "cap": cap.CONTENT_TYPE,
    "eido": eido.CONTENT_TYPE,
    "pidf": pidf.CONTENT_TYPE,
}


def render(contact: Contact, fmt: Format, options: RenderOptions | None = None) -> tuple[bytes, str]:
    """Body and content type of `contact` in `fmt`. Raises pidf.NoLocation for "pidf" without a location."""
    if fmt == "json":
        return contact.to_json().encode("utf-8"), JSON_CONTENT_TYPE
    if fmt == "cap":
        return cap.render_cap(contact, options), cap.CONTENT_TYPE
    if fmt == "eido":
        return eido.render_eido(contact, options), eido.CONTENT_TYPE
    if fmt == "pidf":
        return pidf.render_pidf(contact, options), pidf.CONTENT_TYPE
    raise ValueError(f"unknown format {fmt!r}")


__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "Format",
    "RenderOptions",
    "media_type",
    "options_from_settings",
    "parse_incoming",
    "render",
    "validate",
]
