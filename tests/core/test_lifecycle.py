"""Every (state, event) pair of the pure lifecycle: allowed ones land where the table says, others raise."""

from __future__ import annotations

import itertools

import pytest

from bridge.core.lifecycle import IllegalTransition, LifecycleEvent, needs_stand_down, next_state
from bridge.core.model import AlertState

S, E = AlertState, LifecycleEvent

ALLOWED = {
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
ALL_PAIRS = list(itertools.product(AlertState, LifecycleEvent))
FORBIDDEN = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


def test_table_covers_every_pair() -> None:
    assert len(ALLOWED) + len(FORBIDDEN) == len(AlertState) * len(LifecycleEvent)
    # The forbidden list is not empty by accident: a resolved alert can't be cancelled or re-acknowledged.
    assert (S.resolved, E.cancel) in FORBIDDEN and (S.cancelled, E.ack) in FORBIDDEN


@pytest.mark.parametrize(("state", "event"), list(ALLOWED))
def test_allowed(state: AlertState, event: LifecycleEvent) -> None:
    assert next_state(state, event) == ALLOWED[(state, event)]


@pytest.mark.parametrize(("state", "event"), FORBIDDEN)
def test_forbidden(state: AlertState, event: LifecycleEvent) -> None:
    with pytest.raises(IllegalTransition) as info:
        next_state(state, event)
    assert state.value in str(info.value) and event.value in str(info.value)


@pytest.mark.parametrize(
    ("state", "sent", "expected"),
    [
        (S.received, False, False),
        (S.received, True, True),
        (S.forwarded, False, True),
        (S.acknowledged, False, True),
    ],
)
def test_stand_down_rule(state: AlertState, sent: bool, expected: bool) -> None:
    assert needs_stand_down(state, sent) is expected
