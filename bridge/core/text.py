"""Text at the model boundary: what XML 1.0 and UTF-8 cannot carry never enters the bridge.

C0 control characters other than TAB, LF and CR are removed (a `\\v` in a registered name made every CAP
contact of that person malformed XML); lone surrogates, which cannot be encoded as UTF-8 (a 500 on store),
and the non-characters U+FFFE/U+FFFF become U+FFFD. Applied to every string in the models of
`bridge.core.model` and `bridge.core.contact`, nested lists and dicts included.
"""

from __future__ import annotations

import re
from typing import Any

_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_UNENCODABLE = re.compile("[\ud800-\udfff\ufffe\uffff]")
_ANY_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean_text(text: str) -> str:
    if _ANY_BAD.search(text) is None:
        return text
    return _UNENCODABLE.sub("\ufffd", _CONTROLS.sub("", text))


def clean_value(value: Any) -> Any:
    """`clean_text` applied to a string, or to every string key and value in nested lists and dicts."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(clean_value(v) for v in value)
    return value


def needs_cleaning(value: Any) -> bool:
    """Whether `clean_value` would change `value` (no allocation on the common, clean path)."""
    if isinstance(value, str):
        return _ANY_BAD.search(value) is not None
    if isinstance(value, dict):
        return any(needs_cleaning(k) or needs_cleaning(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(needs_cleaning(v) for v in value)
    return False
