"""Structured logs carry ids; personal data never appears at INFO, even if a caller passes it by mistake."""

from __future__ import annotations

import json
import logging

from bridge.infra.logs import JsonFormatter


def render(level: int, **extra: object) -> dict[str, object]:
    # The way a caller's `log.info(..., extra={...})` builds its record.
    record = logging.getLogger("sosbridge.test").makeRecord(
        "sosbridge.test", level, __file__, 1, "accepted", None, None, extra=extra
    )
    return dict(json.loads(JsonFormatter().format(record)))


def test_ids_are_kept_and_personal_data_redacted_at_info() -> None:
    doc = render(logging.INFO, alert_id="01A", device_id="watch-1", lat=55.9, phone="+447700900123",
                 person="Morag", msisdn="+447700900123")
    assert (doc["alert_id"], doc["device_id"], doc["level"], doc["msg"]) == ("01A", "watch-1", "info", "accepted")
    assert doc["lat"] == doc["phone"] == doc["person"] == doc["msisdn"] == "[redacted]"
    assert "+447700900123" not in json.dumps(doc) and "Morag" not in json.dumps(doc)


def test_debug_may_show_details_for_a_developer() -> None:
    assert render(logging.DEBUG, lat=55.9)["lat"] == 55.9
