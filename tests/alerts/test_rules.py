"""The intake rules build a `Change` from an observation with no I/O: same inputs, same change."""

from __future__ import annotations

from bridge.alerts.rules import escalation_change, new_alert_change
from bridge.core.model import AlertKind, Device, Location, Observation, Severity, utcnow
from tests.support.factories import make_alert


def obs(**fields: object) -> Observation:
    values: dict[str, object] = {"device_id": "d1", "transport": "mqtt", "action": "alert", "kind": AlertKind.sos,
                                 "message_id": "m1", "verified": True}
    values.update(fields)
    return Observation(**values)  # type: ignore[arg-type]


def test_a_new_alert_change_is_a_function_of_its_inputs() -> None:
    now, device = utcnow(), Device(device_id="d1", tenant_id="t1")
    fix = Location(lat=55.95, lon=-3.19, accuracy_m=10)
    args = {"alert_id": "a1", "dedupe_key": "d1|mqtt|m1", "extra_keys": ["d1|mqtt|m2"], "open_alert_id": None,
            "default_status": "actual", "max_last_known_age_s": 3600.0}
    seen = obs(location=fix, presses=2)
    first = new_alert_change(seen, device, now, **args)  # type: ignore[arg-type]
    again = new_alert_change(obs(location=fix, presses=2), device, now, **args)  # type: ignore[arg-type]
    assert first == again
    assert first.alert.alert_id == "a1" and first.alert.escalation_count == 1
    assert first.first_alert and first.check_open_alert and first.expected_open_alert is None
    # The observation's own fix (marked with how far its transport authenticates it) becomes the last location.
    assert first.device_location == ("d1", seen.location) and first.outbox == []
    assert [h.event for h in first.history] == ["received"]


def test_an_escalation_leaves_the_open_alert_as_it_was() -> None:
    open_alert = make_alert(severity=Severity.moderate)
    before = open_alert.model_copy(deep=True)
    change, reason = escalation_change(open_alert, obs(presses=3), Device(device_id="d1"), utcnow(),
                                       dedupe_key=None, extra_keys=[], max_last_known_age_s=3600.0)
    assert open_alert == before
    assert change.alert.escalation_count == open_alert.escalation_count + 3
    assert change.alert.attributes["escalation_kinds"] == {"sos": 3}
    assert change.alert.severity.rank > open_alert.severity.rank
    assert reason == f"escalation: repeated sos (press {change.alert.escalation_count + 1})"
