"""What the delivery channel carries (the framing is bridge/infra/channel.py's).

The parent sends `(req_id, route, item)` for each contact to deliver; the child answers
`(req_id, kind, reason, after_s, status)` with the sink's outcome. The hand-shake's `hello` is the pickled
settings and routes, over a socketpair only the parent and its own child hold. Pure functions;
docs/architecture.md ("Processes").
"""

from __future__ import annotations

from typing import Any

from bridge.delivery.sinks.base import Delivered, Outcome, Permanent, Retry
from bridge.infra.channel import pack
from bridge.store.base import OutboxItem

_DELIVERED, _RETRY, _PERMANENT = 0, 1, 2


def item_fields(item: OutboxItem) -> tuple[Any, ...]:
    """What a sink reads from a row: no alert document, no lease bookkeeping."""
    return (item.item_id, item.alert_id, item.seq, item.msg_type, item.idempotency_key, item.payload,
            item.critical, item.attempts, item.created_at, item.route, item.body, item.body_format,
            item.fallback_sent)


def item_from(fields: tuple[Any, ...]) -> OutboxItem:
    (item_id, alert_id, seq, msg_type, key, payload, critical, attempts, created_at, route, body, body_format,
     fallback_sent) = fields
    return OutboxItem(item_id, alert_id, seq, msg_type, key, payload, critical, state="inflight",
                      attempts=attempts, created_at=created_at, route=route, body=body, body_format=body_format,
                      fallback_sent=fallback_sent)


def request(req_id: int, route: str, item: OutboxItem) -> bytes:
    return pack((req_id, route, item_fields(item)))


def answer(req_id: int, outcome: Outcome) -> bytes:
    if isinstance(outcome, Delivered):
        return pack((req_id, _DELIVERED, "", None, outcome.status))
    if isinstance(outcome, Retry):
        return pack((req_id, _RETRY, outcome.reason, outcome.after_s, 0))
    return pack((req_id, _PERMANENT, outcome.reason, None, 0))


def outcome_of(message: tuple[Any, ...]) -> tuple[int, Outcome]:
    """`(req_id, outcome)` from an answer frame's body."""
    req_id, kind, reason, after_s, status = message
    if kind == _DELIVERED:
        return req_id, Delivered(status)
    if kind == _RETRY:
        return req_id, Retry(reason, after_s)
    return req_id, Permanent(reason)


