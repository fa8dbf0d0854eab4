"""Two-way text between the contact platform and the person (docs/platform/messages.md). Pure helpers.

A message from the platform is one `message_out` entry in the alert's history (written in one commit with
the alert, so it is refused for a closed alert and never changes the alert's state); each delivery over
a device channel is a `message_delivery` entry appended after it (`Store.append_history`). A message from
the person is a `message_in` entry plus a `message` contact in the alert's outbox, in order with the
alert's other contacts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from bridge.core.model import HistoryEntry
from bridge.core.text import clean_text

MAX_TEXT_CHARS = 1000
MESSAGE_OUT = "message_out"
MESSAGE_IN = "message_in"
MESSAGE_DELIVERY = "message_delivery"

DeliveryStatus = Literal["sent", "delivered", "read"]
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
_INVISIBLE = re.compile(r"[\s\u200b-\u200d\u2060\ufeff\x7f-\x9f]")


class BadText(ValueError):
    """The text cannot be a message; the reason is safe to show the sender."""


def clean_message(text: str) -> str:
    """The text as stored: control characters removed (bridge.core.text, plus DEL and C1), surrounding white
    space stripped. Raises BadText for empty text or more than MAX_TEXT_CHARS characters."""
    cleaned = clean_text(text).replace("\x7f", "")
    cleaned = re.sub(r"[\x80-\x9f]", "", cleaned).strip()
    if not _INVISIBLE.sub("", cleaned):
        raise BadText("text is empty")
    if len(cleaned) > MAX_TEXT_CHARS:
        raise BadText(f"text is {len(cleaned)} characters; at most {MAX_TEXT_CHARS} are allowed")
    return cleaned


def deliveries(history: Iterable[HistoryEntry]) -> dict[str, list[dict[str, Any]]]:
    """Delivery records per message id, oldest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for h in history:
        if h.event == MESSAGE_DELIVERY:
            mid = str(h.detail.get("message_id"))
            out.setdefault(mid, []).append(
                {"channel": h.detail.get("channel"), "status": h.detail.get("status"), "at": h.at.isoformat()}
            )
    return out


def delivered_over(history: Iterable[HistoryEntry], channel: str) -> set[str]:
    """Message ids already recorded for `channel` (so a poll records each message once)."""
    return {
        str(h.detail.get("message_id"))
        for h in history
        if h.event == MESSAGE_DELIVERY and h.detail.get("channel") == channel
    }


def device_view(entry: HistoryEntry) -> dict[str, Any]:
    """A platform message as the device API shows it (no operator names, no delivery bookkeeping)."""
    d = entry.detail
    return {
        "message_id": d.get("message_id"),
        "from": "platform",
        "text": d.get("text"),
        "language": d.get("language"),
        "discreet": bool(d.get("discreet")),
        "at": entry.at.isoformat(),
    }


def conversation(history: Iterable[HistoryEntry]) -> list[dict[str, Any]]:
    """Both directions in order, for the device API: platform messages and the person's own."""
    out: list[dict[str, Any]] = []
    for h in history:
        if h.event == MESSAGE_OUT:
            out.append(device_view(h))
        elif h.event == MESSAGE_IN:
            out.append({"message_id": h.detail.get("message_id"), "from": "person", "text": h.detail.get("text"),
                        "at": h.at.isoformat()})
    return out
