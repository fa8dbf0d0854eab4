"""Small builders shared by the store, Redis and pipeline tests."""

from __future__ import annotations

from typing import Any

from bridge.model import Alert, AlertKind, AlertState, Severity, new_id, utcnow


def make_alert(device_id: str = "d1", state: AlertState = AlertState.received, **fields: Any) -> Alert:
    now = utcnow()
    values: dict[str, Any] = {
        "alert_id": new_id(),
        "tenant_id": "t1",
        "device_id": device_id,
        "kind": AlertKind.sos,
        "severity": Severity.severe,
        "silent": False,
        "status": "actual",
        "state": state,
        "occurred_at": now,
        "received_at": now,
        "updated_at": now,
        "transport": "http",
    }
    values.update(fields)
    return Alert(**values)
