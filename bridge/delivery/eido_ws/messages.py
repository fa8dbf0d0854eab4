"""NENA-STA-024.1a messages: read what a subscriber sends, build what the notifier sends. Pure.

Each message is a JSON object with one key naming it (`subscribe`, `event`, ...). The schemas are written
by hand from the standard's message tables (messages.schema.json); the published websocket.yaml
does not load as YAML (a duplicated `terminateObject`, a mis-indented key, an undefined reference).
jsonschema is imported when the first message is checked, not when the bridge loads its sinks.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

SUBSCRIBER_MESSAGES = ("subscribe", "unsubscribe", "eventResponse", "terminateResponse")
NOTIFIER_MESSAGES = ("subscribeResponse", "unsubscribeResponse", "response", "event", "terminate")
MAX_REQUEST_BYTES = 65536  # the standard's floor for what a notifier must accept
_SCHEMA = Path(__file__).parent / "messages.schema.json"


@cache
def _validators() -> dict[str, jsonschema.Draft7Validator]:
    import jsonschema

    schema = json.loads(_SCHEMA.read_text(encoding="utf-8"))
    out = {}
    for name in schema["definitions"]:
        out[name] = jsonschema.Draft7Validator({**schema, "$ref": f"#/definitions/{name}"})
    return out


def schema_errors(name: str, message: Any) -> list[str]:
    """Schema errors of `message` as the message `name` (empty = valid)."""
    return [f"{'/'.join(map(str, e.path)) or name}: {e.message}" for e in _validators()[name].iter_errors(message)]


class Unreadable(ValueError):
    """Not JSON, not an object with exactly one known key, or too large."""

    def __init__(self, reason: str, request_id: str = "") -> None:
        super().__init__(reason)
        self.request_id = request_id


def read(text: str | bytes) -> tuple[str, dict[str, Any]]:
    """(message name, its body) of a subscriber message. Raises Unreadable (unknown kinds too)."""
    if len(text) > MAX_REQUEST_BYTES:
        raise Unreadable("too large")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unreadable(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or len(doc) != 1:
        raise Unreadable("a message is an object with one key")
    ((name, body),) = doc.items()
    request_id = body.get("requestId", "") if isinstance(body, dict) else ""
    request_id = request_id if isinstance(request_id, str) else ""
    if name not in SUBSCRIBER_MESSAGES or not isinstance(body, dict):
        raise Unreadable(f"unknown message {name!r}", request_id)
    return name, body


def subscribe_response(request_id: str, code: int, text: str, **fields: Any) -> dict[str, Any]:
    return {"subscribeResponse": {"requestId": request_id, **fields, "statusCode": code, "statusText": text}}


def unsubscribe_response(request_id: str, subscription_id: str, code: int, text: str) -> dict[str, Any]:
    return {"unsubscribeResponse": {"requestId": request_id, "subscriptionId": subscription_id,
                                    "statusCode": code, "statusText": text}}


def not_implemented(request_id: str) -> dict[str, Any]:
    return {"response": {"requestId": request_id, "statusCode": 501, "statusText": "Not implemented"}}


def event(subscription_id: str, transaction_id: str, notification: list[dict[str, Any]]) -> dict[str, Any]:
    return {"event": {"subscriptionId": subscription_id, "transactionId": transaction_id,
                      "notification": notification}}


def terminate(request_id: str, subscription_id: str) -> dict[str, Any]:
    return {"terminate": {"requestId": request_id, "subscriptionId": subscription_id}}
