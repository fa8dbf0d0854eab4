"""submit(): dedupe, escalation, location fallbacks, cancel rules, and no acknowledgement without storage."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.alerts.pipeline import AlertNotFound, Pipeline, Rejected, UnknownDevice, locate, should_escalate
from bridge.core.events import StatusBus
from bridge.core.model import AlertKind, AlertState, Device, Location, Observation, Person, utcnow
from bridge.infra.metrics import Metrics
from bridge.store.base import StoreError
from bridge.store.sqlite import SqliteStore
from tests.support.factories import make_alert


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[Pipeline]:
    store = SqliteStore(tmp_path / "p.db")
    await store.open()
    await store.put_device(
        Device(
            device_id="w1",
            person=Person(name="Morag", language="gd", communication_needs=["deaf: text only"]),
            registered_address=Location(lat=58.209, lon=-6.385, accuracy_m=30, source="fixed"),
        )
    )
    await store.put_device(Device(device_id="w2"))
    yield Pipeline(store, StatusBus(), Metrics(), public_url="http://bridge.test")
    await store.close()


def obs(**kw: object) -> Observation:
    base: dict[str, object] = {"device_id": "w1", "transport": "http", "kind": AlertKind.sos}
    base.update(kw)
    return Observation.model_validate(base)


async def test_dedupe_on_device_and_message_id(pipeline: Pipeline) -> None:
    first = await pipeline.submit(obs(message_id="m1"))
    again = await pipeline.submit(obs(message_id="m1"))
    assert (first.outcome, again.outcome, again.alert_id) == ("created", "duplicate", first.alert_id)
    # Same message id from another device is not a duplicate.
    other = await pipeline.submit(obs(device_id="w2", message_id="m1"))
    assert other.outcome == "created" and other.alert_id != first.alert_id
    assert len(await pipeline.store.outbox_items(first.alert_id)) == 1


async def test_second_sos_is_an_escalation_not_a_duplicate(pipeline: Pipeline) -> None:
    first = await pipeline.submit(obs(message_id="m1"))
    second = await pipeline.submit(obs(message_id="m2"))
    assert second.outcome == "escalated" and second.alert_id == first.alert_id
    alert = await pipeline.store.get_alert(first.alert_id)
    assert alert is not None and alert.escalation_count == 1 and alert.severity == "extreme"
    items = await pipeline.store.outbox_items(first.alert_id)
    assert [(i.seq, i.msg_type) for i in items] == [(1, "alert"), (2, "update")]
    assert "escalation" in items[1].payload
    assert [h.event for h in await pipeline.store.history(first.alert_id)] == ["received", "escalated"]


async def test_low_battery_does_not_swallow_an_sos(pipeline: Pipeline) -> None:
    battery = await pipeline.submit(obs(kind=AlertKind.low_battery))
    sos = await pipeline.submit(obs(kind=AlertKind.sos))
    assert sos.outcome == "created" and sos.alert_id != battery.alert_id


async def test_enrichment_from_registry(pipeline: Pipeline) -> None:
    result = await pipeline.submit(obs(location=Location(lat=58.2093, lon=-6.387, accuracy_m=9)))
    payload = (await pipeline.store.outbox_items(result.alert_id or ""))[0].payload
    assert '"language":"gd"' in payload and "deaf: text only" in payload
    assert '"grid_ref":"NB ' in payload  # Stornoway lies in the NB 100 km square
    assert '"ack":"http://bridge.test/v1/platform/alerts/' in payload


async def test_duress_is_always_silent(pipeline: Pipeline) -> None:
    result = await pipeline.submit(obs(kind=AlertKind.duress, silent=False))
    alert = await pipeline.store.get_alert(result.alert_id or "")
    assert alert is not None and alert.silent


async def test_cancel_before_forwarding_sends_nothing(pipeline: Pipeline) -> None:
    created = await pipeline.submit(obs())
    cancelled = await pipeline.submit(obs(action="cancel", alert_id=created.alert_id, kind=None))
    assert cancelled.state == AlertState.cancelled
    assert [(i.msg_type, i.state) for i in await pipeline.store.outbox_items(created.alert_id or "")] == [
        ("alert", "cancelled")
    ]


async def test_cancel_after_forwarding_is_a_stand_down(pipeline: Pipeline) -> None:
    from bridge.core.lifecycle import LifecycleEvent

    created = await pipeline.submit(obs())
    await pipeline.ledger.lifecycle_event(created.alert_id or "", LifecycleEvent.delivered, actor="test")
    await pipeline.submit(obs(action="cancel", kind=None))
    items = await pipeline.store.outbox_items(created.alert_id or "")
    assert [i.msg_type for i in items] == ["alert", "cancel"]
    assert '"msg_type":"cancel"' in items[1].payload and '"references":["' in items[1].payload


async def test_unknown_and_foreign(pipeline: Pipeline) -> None:
    with pytest.raises(UnknownDevice):
        await pipeline.submit(obs(device_id="ghost"))
    unverified = await pipeline.submit(obs(device_id="speaker-unknown", verified=False))
    assert unverified.outcome == "created"
    mine = await pipeline.submit(obs())
    with pytest.raises(AlertNotFound):
        await pipeline.submit(obs(device_id="w2", action="cancel", alert_id=mine.alert_id, kind=None))
    with pytest.raises(Rejected):
        await pipeline.submit(obs(kind=None))


async def test_failing_store_is_not_acknowledged(pipeline: Pipeline) -> None:
    """A full disk (SQLite max_page_count) makes the commit fail: submit raises, nothing half-written."""
    store = pipeline.store
    pages = await store._run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])  # type: ignore[attr-defined]
    await store._run(lambda c: c.execute(f"PRAGMA max_page_count={pages}"))  # type: ignore[attr-defined]
    with pytest.raises(StoreError):
        await pipeline.submit(obs(message_id="full", attributes={"pad": "x" * 20000}))
    await store._run(lambda c: c.execute("PRAGMA max_page_count=1073741823"))  # type: ignore[attr-defined]
    assert await store.alerts_for_dedupe(["w1|http|full"]) == {}
    retried = await pipeline.submit(obs(message_id="full", attributes={"pad": "x" * 20000}))
    assert retried.outcome == "created"


def test_locate_fallbacks() -> None:
    now = utcnow()
    registered = Location(lat=58.2, lon=-6.3, source="fixed", accuracy_m=30)
    device = Device(device_id="d", registered_address=registered)
    fix = Location(lat=55.9, lon=-3.2, accuracy_m=5, fix_time=now - timedelta(seconds=4))
    located = locate(fix, device, now, 3600)
    assert located is not None and located.source == "gnss" and located.age_s == pytest.approx(4, abs=0.1)
    stale = device.model_copy(update={"last_location": fix.model_copy(update={"fix_time": now - timedelta(hours=2)})})
    last = locate(None, stale, now, 3 * 3600)
    assert last is not None and last.last_known and last.source == "last_known" and last.age_s > 7000
    too_old = locate(None, stale, now, 3600)
    assert too_old is not None and too_old.source == "registered_address"
    assert locate(None, Device(device_id="x"), now, 3600) is None


def test_should_escalate() -> None:

    base = make_alert(kind=AlertKind.fall)
    assert should_escalate(base, AlertKind.sos)
    assert not should_escalate(base, AlertKind.low_battery)
    assert not should_escalate(base.model_copy(update={"kind": AlertKind.low_battery}), AlertKind.sos)


async def test_flood_folds_into_the_open_alert(tmp_path: Path) -> None:
    """Past the per-device limit every press is still recorded, but contacts are not multiplied."""
    from bridge.infra.ratelimit import TokenBuckets

    store = SqliteStore(tmp_path / "f.db")
    await store.open()
    await store.put_device(Device(device_id="w1"))
    p = Pipeline(store, StatusBus(), Metrics(), update_limiter=TokenBuckets(2, 0.0))
    try:
        results = [await p.submit(obs(message_id=f"m{i}")) for i in range(20)]
        alert_id = results[0].alert_id or ""
        assert {r.alert_id for r in results} == {alert_id}
        alert = await store.get_alert(alert_id)
        assert alert is not None and alert.escalation_count == 19
        history = await store.history(alert_id)
        assert len(history) == 20 and sum("deferred_s" in h.detail for h in history) == 17
        # Each update supersedes the one still waiting (every contact carries the whole alert): with no
        # forwarder running nothing was sent, so one deferred update is left, carrying the latest count.
        items = await store.outbox_items(alert_id)
        live = [i for i in items if i.state != "cancelled"]
        assert [i.msg_type for i in live] == ["alert", "update"] and len(items) == 20
        assert live[-1].next_attempt_at > time.time() + 60 and '"escalation_count":19' in live[-1].payload
        assert '"escalation_kinds":{"sos":19}' in live[-1].payload
        # A genuine new emergency from another device is never limited.
        await store.put_device(Device(device_id="w2"))
        assert (await p.submit(obs(device_id="w2"))).outcome == "created"
    finally:
        await store.close()


def test_token_buckets() -> None:
    from bridge.infra.ratelimit import TokenBuckets

    b = TokenBuckets(2, 1.0, max_keys=2)
    assert [b.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert b.retry_after("a") == pytest.approx(1.0)
    assert b.allow("a", 1.0) is True
    b.allow("b", 1.0)
    b.allow("c", 1.0)  # evicts "a", the least recently used
    assert "a" not in b._buckets


async def test_two_instances_sharing_a_store_lose_no_update(tmp_path: Path) -> None:
    """Two pipelines (as two bridge processes would) escalate one alert at once: every press counts."""
    import asyncio

    store = SqliteStore(tmp_path / "shared.db")
    await store.open()
    await store.put_device(Device(device_id="w1"))
    a = Pipeline(store, StatusBus(), Metrics())
    b = Pipeline(store, StatusBus(), Metrics())
    try:
        first = await a.submit(obs(message_id="m0"))
        presses = [(a if i % 2 else b).submit(obs(message_id=f"m{i}")) for i in range(1, 21)]
        results = await asyncio.gather(*presses)
        assert {r.alert_id for r in results} == {first.alert_id}
        alert = await store.get_alert(first.alert_id or "")
        assert alert is not None and alert.escalation_count == 20
        assert len(await store.history(first.alert_id or "")) == 21
    finally:
        await store.close()


async def test_memory_does_not_grow_with_devices_heard(pipeline: Pipeline) -> None:
    import asyncio

    for i in range(50):
        await pipeline.store.put_device(Device(device_id=f"m{i}"))
    await asyncio.gather(*(pipeline.submit(obs(device_id=f"m{i}", message_id="x")) for i in range(50)))
    assert pipeline.ledger._locks == {}  # per-device locks exist only while held
    again = await asyncio.gather(*(pipeline.submit(obs(device_id=f"m{i}", message_id="x")) for i in range(50)))
    assert {r.outcome for r in again} == {"duplicate"}


async def test_first_presses_on_two_instances_open_one_alert(tmp_path: Path) -> None:
    """The very first presses of one device reaching two instances at once: one alert, the rest escalate."""
    import asyncio

    store = SqliteStore(tmp_path / "race.db")
    await store.open()
    await store.put_device(Device(device_id="w1"))
    a = Pipeline(store, StatusBus(), Metrics())
    b = Pipeline(store, StatusBus(), Metrics())
    try:
        results = await asyncio.gather(*((a if i % 2 else b).submit(obs(message_id=f"p{i}")) for i in range(10)))
        assert len({r.alert_id for r in results}) == 1
        assert sorted(r.outcome for r in results) == ["created"] + ["escalated"] * 9
    finally:
        await store.close()


def test_replaces_fix_keeps_a_fresher_live_fix() -> None:
    from bridge.alerts.pipeline import replaces_fix

    now = utcnow()
    live = Location(lat=57.0, lon=-4.0, accuracy_m=8, source="gnss", fix_time=now)
    stale = Location(lat=49.27, lon=-123.18, accuracy_m=12, source="gnss", last_known=True,
                     fix_time=now - timedelta(hours=3))
    older = Location(lat=57.1, lon=-4.1, accuracy_m=8, source="gnss", fix_time=now - timedelta(minutes=5))
    newer = Location(lat=57.2, lon=-4.2, accuracy_m=8, source="gnss", fix_time=now + timedelta(seconds=5))
    address = Location(lat=58.2, lon=-6.3, accuracy_m=30, source="registered_address")
    assert not replaces_fix(live, stale)
    assert not replaces_fix(live, older)
    assert replaces_fix(live, newer)
    assert replaces_fix(address, stale) and replaces_fix(None, stale)
    assert replaces_fix(live.model_copy(update={"last_known": True}), stale)


def test_a_fix_from_the_future_has_no_age() -> None:
    device = Device(device_id="w9")
    now = utcnow()
    ahead = Location(lat=57.0, lon=-4.0, accuracy_m=8, fix_time=now + timedelta(hours=9))
    slightly = Location(lat=57.0, lon=-4.0, accuracy_m=8, fix_time=now + timedelta(seconds=20))
    assert (located := locate(ahead, device, now, 3600)) is not None and located.age_s is None
    assert (located := locate(slightly, device, now, 3600)) is not None and located.age_s == 0.0


async def test_a_stale_fix_does_not_move_an_alert_with_a_live_one(pipeline: Pipeline) -> None:
    """A tracker repeating an old fix while the alert has a fresh one: kept in the history, no update sent,
    the platform never sees the person jump (QA: a stale NMEA fix moved an alert to Vancouver)."""
    live = Location(lat=57.48, lon=-4.22, accuracy_m=8, source="gnss", fix_time=utcnow())
    first = await pipeline.submit(obs(message_id="m1", location=live))
    stale = Location(lat=49.27, lon=-123.18, accuracy_m=12, source="gnss", last_known=True,
                     fix_time=utcnow() - timedelta(hours=3))
    kept = await pipeline.submit(obs(action="location", kind=None, message_id="m2", location=stale))
    assert kept.outcome == "updated" and kept.alert_id == first.alert_id
    alert = await pipeline.store.get_alert(first.alert_id or "")
    assert alert is not None and alert.location is not None and alert.location.lat == 57.48
    assert [i.msg_type for i in await pipeline.store.outbox_items(first.alert_id or "")] == ["alert"]
    assert (await pipeline.store.history(first.alert_id or ""))[-1].event == "location_kept"
    # A newer live fix still moves it, as an update.
    moved = Location(lat=57.49, lon=-4.23, accuracy_m=6, source="gnss", fix_time=utcnow())
    await pipeline.submit(obs(action="location", kind=None, message_id="m3", location=moved))
    alert = await pipeline.store.get_alert(first.alert_id or "")
    assert alert is not None and alert.location is not None and alert.location.lat == 57.49
