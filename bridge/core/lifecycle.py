"""Pure alert lifecycle rules: no I/O, table-tested.

received → forwarded → acknowledged → resolved; cancelled from any non-final state. The platform may
acknowledge or resolve before the forwarder has recorded the delivery (its callback can race our own
bookkeeping), so ack/resolve are allowed from `received` too. Delivery confirmations arriving after the
platform already moved the alert on are absorbed (no state change), never an error.
"""

from __future__ import annotations

from enum import StrEnum

from bridge.core.model import AlertState


class LifecycleEvent(StrEnum):
    delivered = "delivered"
    ack = "ack"
    resolve = "resolve"
    cancel = "cancel"


class IllegalTransition(ValueError):
    def __init__(self, state: AlertState, event: LifecycleEvent) -> None:
        super().__init__(f"cannot apply {event.value!r} to an alert that is {state.value!r}")
        self.state = state
        self.event = event


S, E = AlertState, LifecycleEvent

TRANSITIONS: dict[tuple[AlertState, LifecycleEvent], AlertState] = {
    (S.received, E.delivered): S.forwarded,
    (S.received, E.ack): S.acknowledged,
    (S.received, E.resolve): S.resolved,
    (S.received, E.cancel): S.cancelled,
    (S.forwarded, E.delivered): S.forwarded,
    (S.forwarded, E.ack): S.acknowledged,
    (S.forwarded, E.resolve): S.resolved,
    (S.forwarded, E.cancel): S.cancelled,
    (S.acknowledged, E.delivered): S.acknowledged,
    (S.acknowledged, E.ack): S.acknowledged,
    (S.acknowledged, E.resolve): S.resolved,
    (S.acknowledged, E.cancel): S.cancelled,
    (S.resolved, E.delivered): S.resolved,
    (S.resolved, E.resolve): S.resolved,
    (S.cancelled, E.delivered): S.cancelled,
    (S.cancelled, E.cancel): S.cancelled,
}


def next_state(state: AlertState, event: LifecycleEvent) -> AlertState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def needs_stand_down(state: AlertState, contact_already_sent: bool) -> bool:
    """A cancel is forwarded as a stand-down once the platform may have seen the alert."""
    return contact_already_sent or state in (S.forwarded, S.acknowledged)


DEVICE_MESSAGES: dict[AlertState, str] = {
    S.received: "Alert received. Sending it to the police.",
    S.forwarded: "Your alert has been sent to the police.",
    S.acknowledged: "Help is on the way.",
    S.resolved: "The police have closed this alert.",
    S.cancelled: "Alert cancelled.",
}
