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
_bad = _ANY_BAD.search


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
    """Whether `clean_value` would change `value` (no allocation on the common, clean path).

    Loops, not generators, and exact type checks first: it runs on every model built at the edge, for
    every string in nested attributes (issue 27: a generator per dict cost more than the regex)."""
    kind = type(value)
    if kind is str:
        return _bad(value) is not None
    if kind is dict or isinstance(value, dict):
        for key, item in value.items():
            if (_bad(key) is not None if type(key) is str else needs_cleaning(key)) or (
                type(item) is not int and needs_cleaning(item)
            ):
                return True
        return False
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        for item in value:
            if type(item) is not int and needs_cleaning(item):
                return True
        return False
    if isinstance(value, str):  # a str subclass (an enum value)
        return _bad(value) is not None
    return False
