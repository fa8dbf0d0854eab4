"""The store contract, run against every store implementation (SQLite here; Redis joins in its issue)."""

from __future__ import annotations

import importlib.util
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.core.ids import new_id
from bridge.core.model import Alert, AlertState, Device, HistoryEntry, Location, Person, utcnow
from bridge.store.base import Change, CheckinRow, ConcurrentUpdate, DuplicateMessage, Store
from tests.support.factories import make_alert, make_item

STORES = ["sqlite"] + (["redis"] if importlib.util.find_spec("bridge.store.redis") else [])


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        from bridge.store.sqlite import SqliteStore

        s: Store = SqliteStore(tmp_path / "store.db")
    else:
        from bridge.store.redis import RedisStore

        url = request.getfixturevalue("redis_url")
        s = RedisStore(url, namespace=f"t{new_id()}")
    await s.open()
    yield s
    await s.close()


async def test_device_registry_and_identifiers(store: Store) -> None:
    device = Device(device_id="d1", tenant_id="t1", identifiers={"msisdn": "+447700900123", "deveui": "a1b2"})
    await store.put_device(device)
    assert (await store.get_device("d1")) == device
    assert (await store.find_device("msisdn", "+447700900123")).device_id == "d1"  # type: ignore[union-attr]
    assert await store.find_device("msisdn", "+447700900999") is None
    # Re-registering replaces identifiers: the old number no longer resolves.
    await store.put_device(device.model_copy(update={"identifiers": {"msisdn": "+447700900456"}}))
    assert await store.find_device("msisdn", "+447700900123") is None
    assert [d.device_id for d in await store.list_devices("t1")] == ["d1"]
    assert await store.list_devices("other") == []
    assert await store.remove_device("d1") is True
    assert await store.get_device("d1") is None
    assert await store.remove_device("d1") is False


async def test_tokens_are_hashed_and_resolve_their_device(store: Store, tmp_path: Path) -> None:
    await store.put_device(Device(device_id="d1"))
    await store.set_credential("d1", "token", "s3cret-token-value")
    assert (await store.device_for_token("s3cret-token-value")).device_id == "d1"  # type: ignore[union-attr]
    assert await store.device_for_token("wrong") is None
    assert await store.get_credential("d1", "token") != "s3cret-token-value"
    await store.set_credential("d1", "coap_hmac", "raw-key", hashed=False)
    assert await store.get_credential("d1", "coap_hmac") == "raw-key"
    db = tmp_path / "store.db"
    if db.exists():
        raw = sqlite3.connect(db).execute("SELECT group_concat(secret) FROM credentials").fetchone()[0]
        assert "s3cret-token-value" not in raw


async def test_dedupe_keys_are_read_together(store: Store) -> None:
    """A backlog's presses: every stored key found in one read, keys never stored left out, past the
    SQLite store's chunk of 500 keys per lookup."""
    await store.put_device(Device(device_id="d1"))
    alert = make_alert()
    stored = [f"d1|mqtt|p{n}" for n in range(700)]
    await store.commit(Change(alert=alert, outbox=[make_item(alert, 1)], dedupe_key=stored[0],
                              extra_dedupe_keys=stored[1:]))
    asked = [key for pair in zip(stored, (f"d1|mqtt|new{n}" for n in range(700)), strict=True) for key in pair]
    assert await store.alerts_for_dedupe(asked) == dict.fromkeys(stored, alert.alert_id)
    assert await store.alerts_for_dedupe([]) == {}


async def test_commit_is_atomic_with_dedupe(store: Store) -> None:
    await store.put_device(Device(device_id="d1"))
    first = make_alert()
    history = [HistoryEntry(at=utcnow(), event="received", state=AlertState.received)]
    await store.commit(Change(alert=first, history=history, outbox=[make_item(first, 1)], dedupe_key="d1|http|m1"))
    assert await store.alerts_for_dedupe(["d1|http|m1"]) == {"d1|http|m1": first.alert_id}
    second = make_alert()
    with pytest.raises(DuplicateMessage) as dup:
        await store.commit(Change(alert=second, outbox=[make_item(second, 1)], dedupe_key="d1|http|m1"))
    assert dup.value.alert_id == first.alert_id
    # Nothing of the rejected change was written.
    assert await store.get_alert(second.alert_id) is None
    assert await store.outbox_items(second.alert_id) == []
    assert [h.event for h in await store.history(first.alert_id)] == ["received"]


async def test_open_alert_and_location(store: Store) -> None:
    await store.put_device(Device(device_id="d1"))
    alert = make_alert()
    fix = Location(lat=55.95, lon=-3.19, accuracy_m=10)
    await store.commit(Change(alert=alert, device_location=("d1", fix)))
    assert (await store.open_alert_for_device("d1")).alert_id == alert.alert_id  # type: ignore[union-attr]
    assert (await store.get_device("d1")).last_location == fix  # type: ignore[union-attr]
    closed = alert.model_copy(update={"state": AlertState.resolved})
    await store.commit(Change(alert=closed))
    assert await store.open_alert_for_device("d1") is None


async def test_lease_orders_contacts_of_one_alert(store: Store) -> None:
    alert = make_alert()
    first, second = make_item(alert, 1), make_item(alert, 2)
    await store.commit(Change(alert=alert, outbox=[first, second]))
    now = time.time()
    leased = await store.lease(10, 30, now)
    # The update waits until the alert itself is delivered.
    assert [i.seq for i in leased] == [1]
    assert await store.lease(10, 30, now) == []
    await store.mark_delivered(first.item_id, now)
    assert [i.seq for i in await store.lease(10, 30, now)] == [2]


async def test_expired_lease_is_released_after_a_crash(store: Store) -> None:
    alert = make_alert()
    await store.commit(Change(alert=alert, outbox=[make_item(alert, 1)]))
    now = time.time()
    assert len(await store.lease(10, 5, now)) == 1
    assert await store.lease(10, 5, now + 1) == []
    # The worker died without reporting: after the lease expires the row is leased again.
    assert len(await store.lease(10, 5, now + 6)) == 1


async def test_retry_dead_and_stats(store: Store) -> None:
    a, b = make_alert("d1"), make_alert("d2")
    ia, ib = make_item(a, 1, critical=True), make_item(b, 1, critical=False)
    await store.commit(Change(alert=a, outbox=[ia]))
    await store.commit(Change(alert=b, outbox=[ib]))
    now = time.time()
    leased = await store.lease(10, 30, now)
    assert {i.item_id for i in leased} == {ia.item_id, ib.item_id}
    assert leased[0].critical  # critical contacts first
    await store.reschedule(ia.item_id, now + 100, "HTTP 503", 3)
    await store.mark_dead(ib.item_id, "HTTP 400", 1)
    assert await store.lease(10, 30, now + 50) == []
    stats = await store.outbox_stats(now, overdue_attempts=3)
    assert (stats.retry, stats.dead, stats.critical_overdue) == (1, 1, 1)
    retried = await store.lease(10, 30, now + 101)
    assert [(i.item_id, i.attempts, i.last_error) for i in retried] == [(ia.item_id, 3, "HTTP 503")]
    await store.mark_fallback_sent(ia.item_id)
    assert (await store.outbox_items(a.alert_id))[0].fallback_sent is True


async def test_cancel_pending_outbox(store: Store) -> None:
    alert = make_alert()
    await store.commit(Change(alert=alert, outbox=[make_item(alert, 1)]))
    assert await store.contact_sent(alert.alert_id) is False
    cancelled = alert.model_copy(update={"state": AlertState.cancelled})
    await store.commit(Change(alert=cancelled, cancel_pending_outbox=True))
    assert [i.state for i in await store.outbox_items(alert.alert_id)] == ["cancelled"]
    assert await store.lease(10, 30, time.time()) == []


async def test_routes_are_independent(store: Store) -> None:
    alert = make_alert()
    await store.commit(Change(alert=alert, outbox=[make_item(alert, 1, route="a"), make_item(alert, 1, route="b")]))
    leased = await store.lease(10, 30, time.time())
    assert sorted(i.route for i in leased) == ["a", "b"]


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    from bridge.store.sqlite import SqliteStore

    s = SqliteStore(tmp_path / "p.db")
    await s.open()
    try:
        mode = await s._run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        sync = await s._run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert (mode, sync) == ("wal", 2)  # 2 = FULL
    finally:
        await s.close()


async def test_purge_closed_keeps_open_alerts(store: Store) -> None:
    from datetime import timedelta

    old_closed = make_alert().model_copy(update={"state": AlertState.resolved})
    old_open = make_alert()
    await store.commit(
        Change(
            alert=old_closed,
            outbox=[make_item(old_closed, 1)],
            dedupe_key="d1|http|old",
            history=[HistoryEntry(at=utcnow(), event="resolve", state=AlertState.resolved)],
        )
    )
    await store.commit(Change(alert=old_open, outbox=[make_item(old_open, 1)]))
    await store.mark_delivered((await store.outbox_items(old_closed.alert_id))[0].item_id, time.time())
    assert await store.purge_closed(utcnow() - timedelta(days=1)) == 0  # too recent
    assert await store.purge_closed(utcnow() + timedelta(seconds=1)) == 1
    assert await store.get_alert(old_closed.alert_id) is None
    assert await store.history(old_closed.alert_id) == []
    assert await store.alerts_for_dedupe(["d1|http|old"]) == {}
    assert await store.get_alert(old_open.alert_id) is not None


async def test_stale_write_is_refused(store: Store) -> None:
    from bridge.store.base import ConcurrentUpdate

    alert = make_alert()
    await store.commit(Change(alert=alert.model_copy(update={"version": 1})))
    first = alert.model_copy(update={"version": 2, "escalation_count": 1})
    await store.commit(Change(alert=first, expected_version=1))
    # A second writer that also read version 1 must not overwrite the first one's change.
    stale = alert.model_copy(update={"version": 2, "state": AlertState.acknowledged})
    with pytest.raises(ConcurrentUpdate):
        await store.commit(Change(alert=stale, expected_version=1, outbox=[make_item(alert, 2)]))
    current = await store.get_alert(alert.alert_id)
    assert current is not None and current.escalation_count == 1 and current.state == AlertState.received
    assert await store.outbox_items(alert.alert_id) == []


async def test_row_committed_already_leased(store: Store) -> None:
    """The forwarder's in-memory hand-over writes a fresh row leased; a crash leaves it to expire."""
    alert = make_alert()
    fresh = make_item(alert, 1)
    now = time.time()
    fresh.state, fresh.lease_until = "inflight", now + 5
    await store.commit(Change(alert=alert, outbox=[fresh]))
    assert await store.lease(10, 5, now + 1) == []
    assert [i.item_id for i in await store.lease(10, 5, now + 6)] == [fresh.item_id]


async def test_new_alert_refused_when_another_opened_meanwhile(store: Store) -> None:
    from bridge.store.base import ConcurrentUpdate

    first = make_alert("d9")
    await store.commit(Change(alert=first, check_open_alert=True, expected_open_alert=None))
    # A second writer that saw no open alert for d9 must not open a parallel one.
    second = make_alert("d9")
    with pytest.raises(ConcurrentUpdate):
        await store.commit(Change(alert=second, check_open_alert=True, expected_open_alert=None))
    assert await store.get_alert(second.alert_id) is None
    third = make_alert("d9")
    await store.commit(Change(alert=third, check_open_alert=True, expected_open_alert=first.alert_id))
    assert (await store.open_alert_for_device("d9")).alert_id == third.alert_id  # type: ignore[union-attr]


async def test_put_devices_batch_is_idempotent_and_sets_tokens(store: Store) -> None:
    devices = [
        Device(device_id=f"b{i}", tenant_id="bulk", identifiers={"msisdn": f"+4477009{i:05d}"}) for i in range(50)
    ]
    await store.put_devices(devices, {"b0": "token-b0-long-enough", "b7": "token-b7-long-enough"})
    await store.put_devices(devices)  # again, without tokens: the same registry, tokens kept
    assert [d.device_id for d in await store.list_devices("bulk")] == sorted(d.device_id for d in devices)
    assert (await store.find_device("msisdn", "+447700900007")).device_id == "b7"  # type: ignore[union-attr]
    assert (await store.device_for_token("token-b0-long-enough")).device_id == "b0"  # type: ignore[union-attr]
    # A re-import with a new number and a new token replaces both, as put_device and set_credential do.
    renumbered = devices[7].model_copy(update={"identifiers": {"msisdn": "+447700911111"}})
    await store.put_devices([renumbered], {"b7": "new-b7"})
    assert await store.find_device("msisdn", "+447700900007") is None
    assert (await store.find_device("msisdn", "+447700911111")).device_id == "b7"  # type: ignore[union-attr]
    assert await store.device_for_token("token-b7-long-enough") is None
    assert (await store.device_for_token("new-b7")).device_id == "b7"  # type: ignore[union-attr]
    await store.put_devices([])


async def test_a_delivered_notification_is_not_a_contact_sent(store: Store) -> None:
    """Emergency contacts' rows (bridge/alerts/emergency_contacts.py) never count as the platform seeing the alert."""
    alert = make_alert()
    police = make_item(alert, 1)
    carer = make_item(alert, 1, critical=False, route="notify:email:0")
    carer.msg_type = "notify"
    await store.commit(Change(alert=alert, outbox=[police, carer]))
    leased = {i.route: i for i in await store.lease(10, 30, time.time())}
    assert set(leased) == {"default", "notify:email:0"}  # independent routes, both due at once
    await store.mark_delivered(carer.item_id, time.time())
    await store.reschedule(police.item_id, time.time() + 60, "down", 0)
    assert await store.contact_sent(alert.alert_id) is False
    await store.mark_delivered(police.item_id, time.time())
    assert await store.contact_sent(alert.alert_id) is True


async def test_append_history_records_without_touching_the_alert(store: Store) -> None:
    await store.put_device(Device(device_id="d1"))
    alert = make_alert()
    await store.commit(Change(alert=alert, history=[HistoryEntry(at=utcnow(), event="received",
                                                                   state=AlertState.received)]))
    version = (await store.get_alert(alert.alert_id)).version  # type: ignore[union-attr]
    sent = HistoryEntry(at=utcnow(), event="message_delivery", state=AlertState.received,
                        detail={"message_id": "m1", "channel": "mqtt", "status": "sent"})
    await store.append_history(alert.alert_id, [sent])
    await store.append_history(alert.alert_id, [])
    history = await store.history(alert.alert_id)
    assert [h.event for h in history] == ["received", "message_delivery"]
    assert history[1].detail == {"message_id": "m1", "channel": "mqtt", "status": "sent"}
    assert (await store.get_alert(alert.alert_id)).version == version  # type: ignore[union-attr]
    # An unknown (or purged) alert gains no orphaned history.
    await store.append_history("no-such-alert", [sent])
    assert await store.history("no-such-alert") == []


async def test_a_leased_first_contact_carries_its_alert_or_nothing(store: Store) -> None:
    """A store may hand the alert's stored document to the lease (SQLite does), so the delivery that moves
    it to `forwarded` needs no read of its own; if it does, it is the alert as committed."""
    alert = make_alert()
    await store.commit(Change(alert=alert, outbox=[make_item(alert, 1)]))
    [leased] = await store.lease(10, 30, time.time())
    if leased.alert_doc is not None:
        assert Alert.model_validate_json(leased.alert_doc) == alert


async def test_a_fix_written_with_an_alert_keeps_the_rest_of_the_device(store: Store) -> None:
    device = Device(device_id="d1", label="kitchen", person=Person(name="A"),
                    registered_address=Location(lat=1.0, lon=2.0))
    await store.put_device(device)
    alert = make_alert()
    fix = Location(lat=55.95, lon=-3.19, accuracy_m=10, fix_time=utcnow())
    await store.commit(Change(alert=alert, device_location=("d1", fix)))
    stored = await store.get_device("d1")
    assert stored == device.model_copy(update={"last_location": fix, "last_seen": alert.updated_at})


# -- check-in timers (bridge/alerts/checkin.py keeps one row per device in the shared store) ---------------
def checkin(device_id: str, timer_id: str, next_at: float, active: bool = True) -> CheckinRow:
    return CheckinRow(device_id, timer_id, f'{{"timer_id": "{timer_id}"}}', active, next_at)


async def test_checkin_rows_are_versioned_per_device(store: Store) -> None:
    assert await store.get_checkin("d1") is None
    assert await store.put_checkin(checkin("d1", "t1", 100.0), None) == 1
    with pytest.raises(ConcurrentUpdate) as first_again:
        await store.put_checkin(checkin("d1", "t2", 100.0), None)  # another instance started one meanwhile
    assert first_again.value.alert_id == "t2"
    # A new timer replaces the device's row; a write from a stale read is refused and changes nothing.
    assert await store.put_checkin(checkin("d1", "t2", 200.0), 1) == 2
    with pytest.raises(ConcurrentUpdate):
        await store.put_checkin(checkin("d1", "t1", 50.0, active=False), 1)
    row = await store.get_checkin("d1")
    assert row is not None and (row.timer_id, row.version, row.active, row.next_at) == ("t2", 2, True, 200.0)
    assert row.doc == '{"timer_id": "t2"}'
    assert await store.get_checkin("d2") is None


async def test_checkin_lease_gives_a_due_timer_to_one_caller_until_it_expires(store: Store) -> None:
    await store.put_checkin(checkin("d1", "t1", 100.0), None)
    await store.put_checkin(checkin("d2", "t2", 300.0), None)
    await store.put_checkin(checkin("d3", "t3", 50.0, active=False), None)  # stopped: never leased
    assert await store.next_checkin_at() == 100.0
    assert await store.lease_checkins(99.0, 30, 10) == []
    leased = await store.lease_checkins(150.0, 30, 10)
    assert [(r.device_id, r.version, r.lease_until) for r in leased] == [("d1", 1, 180.0)]
    # A second instance asking meanwhile gets nothing; the loop sleeps until the lease or d2 is due.
    assert await store.lease_checkins(151.0, 30, 10) == []
    assert await store.next_checkin_at() == 180.0
    # The holder died without writing: after the lease the timer is leased again, by one caller.
    again = await store.lease_checkins(181.0, 30, 10)
    assert [r.device_id for r in again] == ["d1"]
    # The holder's write (expired, nothing left to do) ends the lease and takes the row out of the loop.
    await store.put_checkin(checkin("d1", "t1", 100.0, active=False), again[0].version)
    row = await store.get_checkin("d1")
    assert row is not None and not row.active and row.lease_until == 0.0 and row.version == 2
    assert [r.device_id for r in await store.lease_checkins(1000.0, 30, 10)] == ["d2"]


async def test_checkin_write_during_a_lease_wins_over_the_leaseholder(store: Store) -> None:
    await store.put_checkin(checkin("d1", "t1", 100.0), None)
    (held,) = await store.lease_checkins(100.0, 30, 10)
    # The person stops the timer through another instance while the loop holds the lease.
    await store.put_checkin(checkin("d1", "t1", 100.0, active=False), held.version)
    with pytest.raises(ConcurrentUpdate):
        await store.put_checkin(checkin("d1", "t1", 100.0, active=False), held.version)
    assert await store.next_checkin_at() is None
    assert await store.lease_checkins(10_000.0, 30, 10) == []


async def test_checkin_lease_takes_at_most_limit_in_due_order(store: Store) -> None:
    for n in range(5):
        await store.put_checkin(checkin(f"d{n}", f"t{n}", 100.0 - n), None)
    first = await store.lease_checkins(200.0, 30, 2)
    assert [r.device_id for r in first] == ["d4", "d3"]
    assert [r.device_id for r in await store.lease_checkins(200.0, 30, 10)] == ["d2", "d1", "d0"]

# -- outbox bodies rendered when queued -----------------------------------------------------------------
async def test_a_body_rendered_when_queued_is_kept_with_its_row(store: Store) -> None:
    """The body a sink rendered at queue time comes back with the row, byte for byte (leased from the
    store, listed, and leased again after a retry); a row queued without one has none."""
    alert = make_alert()
    cap = make_item(alert, 1, route="cap")
    cap.body, cap.body_format = '<?xml version="1.0"?>\n<alert>Zoë, 3 € — ✓</alert>\r\n', "cap"
    plain = make_item(alert, 1, route="json")
    await store.commit(Change(alert=alert, outbox=[cap, plain]))
    now = time.time()
    leased = {i.route: i for i in await store.lease(10, 5, now)}
    assert (leased["cap"].body, leased["cap"].body_format) == (cap.body, "cap")
    assert (leased["json"].body, leased["json"].body_format) == (None, None)
    await store.reschedule(leased["cap"].item_id, now, "HTTP 503", 1)
    [again] = await store.lease(10, 5, now + 1)
    assert again.item_id == cap.item_id and again.body == cap.body and again.attempts == 1
    listed = {i.route: i for i in await store.outbox_items(alert.alert_id)}
    assert listed["cap"].body == cap.body and listed["json"].body is None


async def test_a_handed_over_row_keeps_its_body(store: Store) -> None:
    """A fresh row committed already leased (the in-memory hand-over) is stored with its body too, so a
    crash before delivery re-leases it with the same bytes."""
    alert = make_alert()
    fresh = make_item(alert, 1)
    fresh.body, fresh.body_format = '{"eido": true}', "eido"
    now = time.time()
    fresh.state, fresh.lease_until = "inflight", now + 5
    await store.commit(Change(alert=alert, outbox=[fresh]))
    [leased] = await store.lease(10, 5, now + 6)
    assert (leased.body, leased.body_format) == ('{"eido": true}', "eido")


async def test_scan_devices_pages_through_the_whole_registry(store: Store) -> None:
    """Every device once, in pages no larger than asked (supervision scans a large registry this way)."""
    devices = [Device(device_id=f"d{i:03d}", tenant_id="t1" if i % 2 else "t2") for i in range(23)]
    await store.put_devices(devices)
    pages = [page async for page in store.scan_devices(batch=5)]
    assert all(1 <= len(page) <= 5 for page in pages) and len(pages) >= 5
    assert sorted(d.device_id for page in pages for d in page) == [d.device_id for d in devices]
    assert {d.tenant_id for page in pages for d in page} == {"t1", "t2"}
    one = [page async for page in store.scan_devices(batch=500)]
    assert [len(page) for page in one] == [23]
    await store.remove_device("d007")
    assert "d007" not in {d.device_id async for page in store.scan_devices(batch=4) for d in page}
