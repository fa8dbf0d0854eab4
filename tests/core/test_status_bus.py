"""The status bus never shows a device an older state of its alert after a newer one: with intake processes
a commit's event can arrive after a later commit's event from another process (issue 27: "retained status
never goes backwards"). Texts are never dropped."""

from __future__ import annotations

from bridge.core.events import StatusBus, StatusEvent, TextMessage
from bridge.core.model import AlertState


def status(state: AlertState, version: int | None, alert_id: str = "a1") -> StatusEvent:
    return StatusEvent(alert_id, "d1", "t1", state, state.value, version=version)


async def test_an_older_state_published_late_is_not_shown() -> None:
    bus = StatusBus()
    async with bus.subscribe() as q:
        bus.publish(status(AlertState.received, 1))
        bus.publish(status(AlertState.cancelled, 3))
        bus.publish(status(AlertState.forwarded, 2))  # the forwarder's commit, its event after the cancel's
        bus.publish(status(AlertState.received, 1, alert_id="a2"))  # another alert: its own versions
        bus.publish(status(AlertState.cancelled, 3))  # the same version again still goes out
        text = TextMessage("m1", "Help is on the way", "en", False, False, "2026-12-08T00:00:00Z")
        bus.publish(StatusEvent("a1", "d1", "t1", AlertState.forwarded, "message", text=text, version=2))
        bus.publish(status(AlertState.received, None))  # not from a versioned write: not judged
        seen = [q.get_nowait() for _ in range(q.qsize())]
    assert [(e.alert_id, e.event, e.version) for e in seen] == [
        ("a1", "received", 1), ("a1", "cancelled", 3), ("a2", "received", 1), ("a1", "cancelled", 3),
        ("a1", "message", 2), ("a1", "received", None)]
