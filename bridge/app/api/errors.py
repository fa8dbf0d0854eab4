"""One error shape for every HTTP answer: `{"error": code, "reason": text}` with its status and headers.

`answer_for(exc)` maps the bridge's exceptions (refused credentials, refusals by the ingress or the
ledger, a store that could not commit) to that answer; the FastAPI exception handlers and the lean
`POST /v1/alerts` handler (bridge/app/api/lean.py) both use it, so a refusal reads the same on every
route. See docs/transports/http.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.exceptions import HTTPException

from bridge.alerts.pipeline import Rejected
from bridge.store.base import StoreError

# Refusals by the ledger that are a conflict with the alert's state, or name nothing; any other is 422.
REJECTED_STATUS = {"illegal_transition": 409, "nothing_to_cancel": 409, "alert_closed": 409, "nothing_open": 409,
                   "not_found": 404}
STORE_UNAVAILABLE = "the alert could not be stored; retry"


def error_body(code: str, reason: str) -> dict[str, str]:
    return {"error": code, "reason": reason}


def validation_reason(errors: list[Any]) -> str:
    """The first three validation errors as `field.path: message`, the request's `body` level left out."""
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def answer_for(exc: BaseException) -> Answer | None:
    """The answer for an exception a route raised, or None when it is not one of ours (a bug: a 500)."""
    if isinstance(exc, HTTPException) and isinstance(exc.detail, dict):
        return Answer(exc.status_code, exc.detail, dict(exc.headers or {}))
    if isinstance(exc, Rejected):  # AlertNotFound included: code not_found
        return Answer(REJECTED_STATUS.get(exc.code, 422), error_body(exc.code, exc.reason))
    if isinstance(exc, StoreError):
        # Not stored, so not acknowledged: the device must retry.
        return Answer(503, error_body("unavailable", STORE_UNAVAILABLE), {"Retry-After": "1"})
    return None
