"""A repeat carrying the message id of a press already received never counts as a new press: not while its
original is in flight (folded beside it), not once it is stored, not after memory forgot it (the store's
durable dedupe key answers). Issue 27 item 3; docs/limits.md.

The storm case runs on a real Mosquitto: the platform must see 0 escalation updates.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.alerts.pipeline import Pipeline, press_ids
from bridge.core.events import StatusBus
from bridge.core.model import AlertKind, Device, Observation
from bridge.infra.metrics import Metrics
from bridge.ingress.lanes import fold
from bridge.ingress.repeats import digest
from bridge.store.sqlite import SqliteStore
from simulator.devices.mqtt import MqttPublisher
from tests.device_adapters.test_mqtt_adapter import make_env
from tests.device_adapters.test_mqtt_ingress import _settle


def press(message_id: str | None, **kw: object) -> Observation:
    base: dict[str, object] = {"device_id": "w1", "transport": "mqtt", "kind": AlertKind.sos,
                               "message_id": message_id}
    base.update(kw)
    return Observation.model_validate(base)


def test_press_ids_counts_a_repeated_id_once_and_never_as_a_press_without_id() -> None:
    assert press_ids("a", ["a", "a", "a"], 4) == (["a"], 0)
    assert press_ids("a", ["b", "a"], 3) == (["a", "b"], 0)
    assert press_ids(None, ["b"], 2) == (["b"], 1)  # the first press had no id: a real extra press
    assert press_ids(None, [], 3) == ([], 3)
    assert press_ids("a", [], 1) == (["a"], 0)


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "r.db")
    await s.open()
    await s.put_device(Device(device_id="w1"))
    return s


async def test_repeats_folded_beside_their_original_are_one_press(store: SqliteStore) -> None:
    """The original and 50 repeats waiting together in the lane: one alert, no escalation."""
    p = Pipeline(store, StatusBus(), Metrics())
    try:
        result = await asyncio.wait_for(p.submit(fold([press("m1") for _ in range(51)])), 10)
        assert result.outcome == "created"
        alert = await store.get_alert(result.alert_id or "")
        assert alert is not None and alert.escalation_count == 0
    finally:
        await store.close()


async def test_repeats_of_a_stored_press_are_duplicates_even_when_folded(store: SqliteStore) -> None:
    """The original stored, then 30 repeats folded together with one new press: one escalation, of one."""
    p = Pipeline(store, StatusBus(), Metrics())
    try:
        first = await asyncio.wait_for(p.submit(press("m1")), 10)
        again = await asyncio.wait_for(p.submit(fold([press("m1") for _ in range(30)])), 10)
        assert again.outcome == "duplicate" and again.alert_id == first.alert_id
        mixed = await asyncio.wait_for(p.submit(fold([*(press("m1") for _ in range(30)), press("m2")])), 10)
        assert mixed.outcome == "escalated"
        alert = await store.get_alert(first.alert_id or "")
        assert alert is not None and alert.escalation_count == 1
    finally:
        await store.close()


async def test_repeats_of_a_press_memory_forgot_are_answered_by_the_store(store: SqliteStore) -> None:
    """A new Pipeline (a restart, or a bounded memory that evicted the id) on the same store: the durable
    dedupe key still makes folded repeats a duplicate, not a press."""
    first = await asyncio.wait_for(Pipeline(store, StatusBus(), Metrics()).submit(press("m1")), 10)
    forgetful = Pipeline(store, StatusBus(), Metrics())
    try:
        again = await asyncio.wait_for(forgetful.submit(fold([press("m1") for _ in range(20)])), 10)
        assert again.outcome == "duplicate" and again.alert_id == first.alert_id
        alone = await asyncio.wait_for(Pipeline(store, StatusBus(), Metrics()).submit(press("m1")), 10)
        assert alone.outcome == "duplicate"
        alert = await store.get_alert(first.alert_id or "")
        assert alert is not None and alert.escalation_count == 0
    finally:
        await store.close()


async def test_a_backlog_counts_only_its_presses_the_store_has_not_seen(store: SqliteStore) -> None:
    """A forgetful Pipeline (memory answers nothing) gets a backlog of four stored presses and two new ones,
    interleaved: the store's keys, read together, leave exactly the two new presses to escalate."""
    first = await asyncio.wait_for(Pipeline(store, StatusBus(), Metrics()).submit(
        fold([press(f"m{n}") for n in range(4)])), 10)
    alert = await store.get_alert(first.alert_id or "")
    assert alert is not None and alert.escalation_count == 3
    forgetful = Pipeline(store, StatusBus(), Metrics())
    try:
        backlog = [press("m0"), press("n0"), press("m1"), press("m2"), press("n1"), press("m3")]
        again = await asyncio.wait_for(forgetful.submit(fold(backlog)), 10)
        assert again.outcome == "escalated" and again.alert_id == first.alert_id
        alert = await store.get_alert(first.alert_id or "")
        assert alert is not None and alert.escalation_count == 5
        replayed = await asyncio.wait_for(Pipeline(store, StatusBus(), Metrics()).submit(fold(backlog)), 10)
        assert replayed.outcome == "duplicate"
    finally:
        await store.close()


async def test_a_storm_of_repeats_with_one_message_id_causes_no_escalation(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Mosquitto. Twenty devices each press once; 600 repeats of those presses follow, some byte for
    byte, some differing only in a timestamp (a retransmission restamped), shuffled in while the originals
    are still in flight. Every frame is acknowledged, each device has one alert with no escalation, and
    the platform receives one contact per device and not a single escalation update."""
    n = 20
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        for i in range(n):
            await env.add(f"d{i}", "sosbridge-mqtt-button")
        before = env.adapter.handled

        def frame(i: int, stamp: int | None) -> tuple[str, bytes, bool]:
            body: dict[str, object] = {"kind": "sos", "message_id": f"press-{i}"}
            if stamp is not None:
                body["ts"] = stamp
            return f"sosbridge/acme/d{i}/alert", json.dumps(body).encode(), False

        msgs = [frame(i, None) for i in range(n)]
        msgs += [frame(k % n, None if k % 2 else 1_700_000_000 + k) for k in range(600)]
        await asyncio.to_thread(MqttPublisher(mosquitto_url).publish_many, msgs)
        await _settle(env.adapter, before, len(msgs))
        for i in range(n):
            alert = await env.store.open_alert_for_device(f"d{i}")
            assert alert is not None and alert.escalation_count == 0, f"d{i}"
            await env.contacts_for(f"d{i}")
        await asyncio.sleep(0.5)  # anything extra the forwarder would still send
        assert sorted(c["device"]["id"] for c in env.rx.contacts) == sorted(f"d{i}" for i in range(n))
        assert all(c["msg_type"] == "alert" for c in env.rx.contacts)


def hold_commits(store: Any, monkeypatch: pytest.MonkeyPatch, which: Callable[[Any], str | None]
                 ) -> tuple[asyncio.Event, list[str]]:
    """Hold at a gate every commit for which `which(change)` names something (recorded in the list, in
    order), until the gate is set; every other commit goes through."""
    gate = asyncio.Event()
    held: list[str] = []
    real_commit = store.commit

    async def gated_commit(change: Any) -> None:
        name = which(change)
        if name is not None:
            held.append(name)
            await asyncio.wait_for(gate.wait(), 20)
        await real_commit(change)

    monkeypatch.setattr(store, "commit", gated_commit)
    return gate, held


async def test_a_repeat_in_flight_is_acknowledged_only_after_its_original_is_stored(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Mosquitto. The store's commit is held at a gate: the original press and its byte-identical
    repeats arrive meanwhile, and none of them is acknowledged until the commit is through; then all are,
    the repeats without a second commit. A repeat of the stored frame afterwards is a duplicate too."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        await env.add("g1", "sosbridge-mqtt-button")
        store = env.store
        # A press (the forwarder's own bookkeeping is not held).
        gate, commits = hold_commits(store, monkeypatch, lambda change: change.dedupe_key)
        before = env.adapter.handled
        frame = ("sosbridge/acme/g1/alert", json.dumps({"kind": "sos", "message_id": "g-1"}).encode(), False)
        await asyncio.to_thread(MqttPublisher(mosquitto_url).publish_many, [frame] * 5)
        for _ in range(200):  # the original reached the (held) commit
            if commits:
                break
            await asyncio.sleep(0.01)
        assert commits == ["g1|mqtt|g-1"]
        await asyncio.sleep(0.3)  # every repeat has arrived by now (one connection, in order)
        assert env.adapter.handled == before, "acknowledged before the original was stored"
        assert env.adapter.repeats.in_flight(digest(frame[0], frame[1])) is not None
        gate.set()
        await _settle(env.adapter, before, 5)
        assert commits == ["g1|mqtt|g-1"]  # the repeats never reached the store
        assert await store.open_alert_for_device("g1") is not None
        await MqttPublisher(mosquitto_url).apublish(frame[0], frame[1])
        await _settle(env.adapter, before, 6)
        assert commits == ["g1|mqtt|g-1"]


async def test_a_cancel_never_overtakes_copies_of_a_press_without_an_id(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Mosquitto. A press without a message id, two byte-identical copies and then a cancel, while the
    first commit is held. A press without an id counts each time, so the copies are presses too, and the
    cancel comes after all three: the alert ends cancelled and no alert is left open. Before, the copies
    waited for their original while the cancel was served beside them, so it overtook them and they opened
    a new alert after it (the police got an SOS the person had cancelled)."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        await env.add("g2", "sosbridge-mqtt-button")
        store = env.store
        first: list[str] = []

        def the_press(change: Any) -> str | None:  # the first commit of g2's press only
            if change.alert.device_id != "g2" or first:
                return None
            first.append(change.alert.alert_id)
            return change.alert.alert_id

        gate, held = hold_commits(store, monkeypatch, the_press)
        before = env.adapter.handled
        topic = "sosbridge/acme/g2/alert"
        press_frame = (topic, json.dumps({"kind": "sos"}).encode(), False)
        cancel_frame = (topic, json.dumps({"action": "cancel"}).encode(), False)
        await asyncio.to_thread(MqttPublisher(mosquitto_url).publish_many, [press_frame] * 3 + [cancel_frame])
        for _ in range(200):  # the press reached the (held) commit
            if held:
                break
            await asyncio.sleep(0.01)
        assert held
        await asyncio.sleep(0.3)  # the copies and the cancel have arrived by now (one connection, in order)
        assert env.adapter.handled == before, "acknowledged before the press was stored"
        gate.set()
        await _settle(env.adapter, before, 4)
        assert await store.open_alert_for_device("g2") is None, "a copy opened an alert after the cancel"
        alert = await store.get_alert(held[0])
        assert alert is not None and alert.state.value == "cancelled"


async def test_the_mqtt_adapter_alone_remembers_its_stored_frames(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Mosquitto. A stored MQTT frame's repeats are answered by the adapter, so the ingress keeps no
    second copy of its digest (issue 27's memory: about 2 MB per 10,000 alerts); the repeat is still a
    duplicate that never reaches the store."""
    async with make_env(tmp_path, mosquitto_url, monkeypatch) as env, env.running():
        for i in range(3):
            await env.add(f"r{i}", "sosbridge-mqtt-button")
        ingress = env.bridge.runtime.ingress
        before = env.adapter.handled
        frames = [(f"sosbridge/acme/r{i}/alert", json.dumps({"kind": "sos", "message_id": f"r-{i}"}).encode(),
                   False) for i in range(3)]
        await asyncio.to_thread(MqttPublisher(mosquitto_url).publish_many, frames)
        await _settle(env.adapter, before, 3)
        for topic, payload, _retain in frames:
            assert env.adapter.repeats.stored(digest(topic, payload)) is True
        assert len(ingress._stored_frames) == 0

        commits: list[str] = []
        real_commit = env.store.commit

        async def counted_commit(change: Any) -> None:
            if change.dedupe_key is not None:
                commits.append(change.dedupe_key)
            await real_commit(change)

        monkeypatch.setattr(env.store, "commit", counted_commit)
        registry = env.bridge.runtime.metrics.registry
        duplicates = registry.get_sample_value("sosbridge_duplicates_total", {"transport": "mqtt"}) or 0.0
        await MqttPublisher(mosquitto_url).apublish(frames[0][0], frames[0][1])
        await _settle(env.adapter, before, 4)
        assert commits == []
        assert registry.get_sample_value("sosbridge_duplicates_total", {"transport": "mqtt"}) == duplicates + 1
