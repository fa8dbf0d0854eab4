"""Structured JSON logs. Extra fields (alert_id, device_id, ...) are emitted as keys.

Personal data (locations, names, phone numbers) is never passed as an extra at INFO; the key filter below
is a second line of defence that redacts such keys at INFO and above unless DEBUG is enabled.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
PERSONAL_KEYS = frozenset({"lat", "lon", "location", "name", "phone", "msisdn", "address", "person"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if key in PERSONAL_KEYS and record.levelno >= logging.INFO:
                value = "[redacted]"
            doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore", "aiocoap", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
