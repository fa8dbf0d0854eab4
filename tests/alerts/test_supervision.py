"""Device supervision: missed check-ins, silent gateways and recovery, against a real embedded bridge and
the reference receiver (real SQLite store, real forwarder, real HTTP delivery)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.alerts.supervision import Supervisor, Watch, decide, effective_interval
from bridge.core.model import AlertKind, Device, Observation, utcnow
from bridge.devices.profiles import load_profile_file
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.paths import ROOT

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)

# A profile that declares check_in_missed and sets an interval: the bridge's own alert kinds still go
# through the profile's kind policy (see docs/operations/supervision.md).
CHECKIN_PROFILE = """\
version: 1
id: test-checkin-pendant
vendor: Test
model: Check-in pendant
transport: http
decoder: json
kinds: [sos, check_in_missed, device_offline]
check_in_interval_s: 1
mappings:
  - when: [{field: kind, exists: true}]
    kind_from: kind
"""


# -- pure rules ---------------------------------------------------------------------------------------------
def test_device_interval_overrides_profile() -> None:
    profile = load_profile_file(ROOT / "hardware/profiles/zigbee2mqtt-tuya-ts0215a-sos.yaml")
    with_interval = profile.model_copy(update={"check_in_interval_s": 3600})
    assert effective_interval(Device(device_id="a"), None) is None
    assert effective_interval(Device(device_id="a"), profile) is None
    assert effective_interval(Device(device_id="a"), with_interval) == 3600
    assert effective_interval(Device(device_id="a", check_in_interval_s=60), with_interval) == 60
    assert effective_interval(Device(device_id="a", check_in_interval_s=0), with_interval) is None


@pytest.mark.parametrize(
    ("last_seen_s", "now_s", "silent_since_s", "behind_offline", "verdict"),
    [
        (0, 100, None, False, "ok"),  # within interval
        (0, 129, None, False, "ok"),  # late, but within grace
        (0, 130, None, False, "raise"),  # interval + grace reached
        (0, 500, 0, False, "raised"),  # still the same silence: never raised twice
        (200, 500, 0, False, "recover"),  # heard after the silence was raised
        (0, 131, None, True, "suppressed"),  # its gateway is already reported offline
        (None, 131, None, False, "raise"),  # never heard: the clock starts at the baseline
    ],
)
def test_decide(
    last_seen_s: int | None, now_s: int, silent_since_s: int | None, behind_offline: bool, verdict: str
) -> None:
    at: Callable[[int], datetime] = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    device = Device(device_id="d", last_seen=at(last_seen_s) if last_seen_s is not None else None)
    watch = Watch("d", baseline=T0, silent_since=at(silent_since_s) if silent_since_s is not None else None)
    decision = decide(device, 100, watch, at(now_s), grace_s=30, behind_offline_gateway=behind_offline)
    assert decision.verdict == verdict
    assert decision.due_at == decision.heard + timedelta(seconds=130)


def test_bus_heard_counts_as_heard() -> None:
    device = Device(device_id="d", last_seen=T0)
    watch = Watch("d", baseline=T0, heard_at=T0 + timedelta(seconds=120))
    assert decide(device, 100, watch, T0 + timedelta(seconds=131), grace_s=30).verdict == "ok"


# -- end to end ---------------------------------------------------------------------------------------------
@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[BridgeEnv]:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "test-checkin-pendant.yaml").write_text(CHECKIN_PROFILE)
    # The runtime's own supervisor is off: each test runs one with short timings, and two supervisors
    # on one bridge would each see the other's alerts.
    async with running_bridge(tmp_path, profile_dirs=str(profiles), supervision_enabled=False) as bridge:
        yield bridge


def contacts_for(env: BridgeEnv, device_id: str, kind: str, msg_type: str = "alert") -> list[dict[str, Any]]:
    return [
        c
        for c in env.receiver.contacts
        if c["device"]["id"] == device_id and c["kind"] == kind and c["msg_type"] == msg_type
    ]


async def heartbeat(env: BridgeEnv, device_id: str) -> None:
    # What an adapter does for a frame without events (e.g. zigbee2mqtt availability "online").
    await env.bridge.runtime.pipeline.submit(Observation(device_id=device_id, transport="mqtt", action="heartbeat"))


async def test_missed_check_in_reaches_the_platform_once_and_recovery_is_recorded(
    env: BridgeEnv, tmp_path: Path
) -> None:
    await env.add_device("pendant-1", profile_id="test-checkin-pendant")  # interval 1 s from the profile
    await env.add_device("quiet-1")  # not supervised: no interval anywhere
    db = tmp_path / "supervision-test.db"
    sup = Supervisor(env.bridge.runtime, grace_s=0.5, max_tick_s=0.2, db_path=db)
    await sup.start()
    try:
        await env.receiver.wait_for(lambda cs: bool(contacts_for(env, "pendant-1", "check_in_missed")), timeout=10)
        [contact] = contacts_for(env, "pendant-1", "check_in_missed")
        assert contact["person"]["name"] == "Person pendant-1"
        assert "no check-in" in contact["reason"]
        watch = sup.watches["pendant-1"]
        # Not raised early: the alert was created only after interval + grace of silence.
        created = datetime.fromisoformat(contact["received_at"])
        assert created - watch.baseline >= timedelta(seconds=1.5)
        for _ in range(5):
            await sup.tick()
    finally:
        await sup.stop()
    # A restart (same table) does not raise the same silence again.
    sup = Supervisor(env.bridge.runtime, grace_s=0.5, max_tick_s=0.2, db_path=db)
    await sup.start()
    try:
        for _ in range(3):
            await sup.tick()
        assert len(contacts_for(env, "pendant-1", "check_in_missed")) == 1
        assert "quiet-1" not in sup.watches
        alert_id = contact["alert_id"]

        await heartbeat(env, "pendant-1")
        await env.receiver.wait_for(
            lambda cs: any(c["alert_id"] == alert_id and c["msg_type"] == "update" for c in cs), timeout=10
        )
        update = next(c for c in env.receiver.contacts if c["alert_id"] == alert_id and c["msg_type"] == "update")
        assert "heard again" in update["reason"]
        history = await env.store.history(alert_id)
        assert [h.event for h in history if h.event == "restore"] == ["restore"]
        assert sup.watches["pendant-1"].silent_since is None
        # After recovery a new silence is a new alert (it escalates the still-open one: same kind).
        await env.receiver.wait_for(
            lambda cs: any(c["alert_id"] == alert_id and "escalation" in (c.get("reason") or "") for c in cs),
            timeout=10,
        )
    finally:
        await sup.stop()


async def test_silent_gateway_raises_device_offline_for_the_devices_behind_it(env: BridgeEnv, tmp_path: Path) -> None:
    await env.add_device("z2m-hall", check_in_interval_s=1)  # the gateway
    # A Tuya SOS button behind it; its profile declares device_offline (hardware/profiles/).
    await env.add_device("button-1", profile_id="zigbee2mqtt-tuya-ts0215a-sos", gateway_id="z2m-hall")
    # A device behind it with its own (longer) interval: the gateway's outage must not also raise check_in_missed.
    await env.add_device("pendant-2", profile_id="test-checkin-pendant", gateway_id="z2m-hall", check_in_interval_s=3)
    sup = Supervisor(env.bridge.runtime, grace_s=0.5, max_tick_s=0.2, db_path=tmp_path / "sup.db")
    await sup.start()
    try:
        await env.receiver.wait_for(lambda cs: bool(contacts_for(env, "button-1", "device_offline")), timeout=10)
        [offline] = contacts_for(env, "button-1", "device_offline")
        assert offline["attributes"]["gateway"] == "z2m-hall"
        assert "gateway 'z2m-hall' silent" in offline["reason"]
        # pendant-2 goes silent too while the gateway is out: suppressed, and its device_offline is the record.
        await env.receiver.wait_for(lambda cs: bool(contacts_for(env, "pendant-2", "device_offline")), timeout=10)
        await sup.tick(now=utcnow() + timedelta(seconds=30))  # well past pendant-2's own interval + grace
        assert contacts_for(env, "pendant-2", "check_in_missed") == []
        assert contacts_for(env, "z2m-hall", "device_offline") == []  # no person behind the gateway itself

        await heartbeat(env, "z2m-hall")
        await env.receiver.wait_for(
            lambda cs: any(c["alert_id"] == offline["alert_id"] and c["msg_type"] == "update" for c in cs),
            timeout=10,
        )
        history = await env.store.history(offline["alert_id"])
        assert "restore" in [h.event for h in history]
    finally:
        await sup.stop()


async def test_a_device_raising_its_own_alerts_is_heard(env: BridgeEnv, tmp_path: Path) -> None:
    """An alert without a fix does not move last_seen; the status bus still counts it as the device speaking."""
    token = await env.add_device("wearable-1", check_in_interval_s=60)
    await env.add_device("wearable-2", check_in_interval_s=60)  # control: silent all along
    sup = Supervisor(env.bridge.runtime, grace_s=10, max_tick_s=0.2, db_path=tmp_path / "sup.db")
    await sup.start()
    try:
        await sup.tick()
        baseline = sup.watches["wearable-1"].baseline
        assert sup.watches["wearable-2"].baseline == baseline
        async with httpx.AsyncClient(base_url=env.url) as client:
            resp = await client.post("/v1/alerts", json={"kind": "sos"}, headers={"authorization": f"Bearer {token}"})
            assert resp.status_code == 202, resp.text
        for _ in range(100):
            if sup.watches["wearable-1"].heard_at is not None:
                break
            await asyncio.sleep(0.05)
        assert sup.watches["wearable-1"].heard_at is not None
        # The moment both would be overdue had neither spoken.
        await sup.tick(now=baseline + timedelta(seconds=70, milliseconds=1))
        assert sup.watches["wearable-2"].silent_since is not None
        assert sup.watches["wearable-1"].silent_since is None
        open_2 = await env.store.open_alert_for_device("wearable-2")
        assert open_2 is not None and open_2.kind == AlertKind.check_in_missed
    finally:
        await sup.stop()


async def test_stop_just_after_the_device_was_heard_stops_the_loop(
    env: BridgeEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hang of test_a_device_raising_its_own_alerts_is_heard on a loaded machine: the bus listener woke
    the loop (a device was heard) in the same loop step as stop() cancelled it; Python 3.11's wait_for
    lost that cancellation, the loop ran on, and stop() awaited it forever. Here the wake and the stop
    coincide on purpose."""
    sup = Supervisor(env.bridge.runtime, grace_s=10, max_tick_s=0.2, db_path=tmp_path / "sup.db")
    await sup.start()
    tasks = list(sup._tasks)
    await asyncio.sleep(0.05)  # the loop is asleep until its next tick or a wake
    sup._wake.set()  # what the listener does when a device speaks
    with caplog.at_level(logging.ERROR, logger="sosbridge.aio"):
        stopping = asyncio.create_task(sup.stop())
        done, _ = await asyncio.wait({stopping}, timeout=10)
    assert stopping in done, "stop() did not return"
    stopping.result()
    assert all(t.done() for t in tasks)
    assert not [r for r in caplog.records if r.getMessage() == "tasks did not stop after cancellation"]


async def test_profile_without_check_in_missed_still_raises_it_once(env: BridgeEnv, tmp_path: Path) -> None:
    # A profile declares what the device sends; check_in_missed is raised by the bridge about the device,
    # so the Tuya button's profile (which does not list it) must not stop it.
    await env.add_device("button-2", profile_id="zigbee2mqtt-tuya-ts0215a-sos", check_in_interval_s=1)
    sup = Supervisor(env.bridge.runtime, grace_s=0.2, max_tick_s=0.1, db_path=tmp_path / "sup.db")
    await sup.start()
    try:
        for _ in range(100):
            if sup.watches.get("button-2") and sup.watches["button-2"].alert_ids:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # several more ticks: still one alert, not one per tick
        watch = sup.watches["button-2"]
        assert watch.silent_since is not None and len(watch.alert_ids) == 1
        alert = await env.store.open_alert_for_device("button-2")
        assert alert is not None and alert.kind == "check_in_missed" and alert.escalation_count == 0
    finally:
        await sup.stop()


async def test_the_runtime_runs_supervision_from_settings(tmp_path: Path) -> None:
    """BridgeRuntime starts a Supervisor itself, configured by SOSBRIDGE_SUPERVISION_* settings."""
    async with running_bridge(
        tmp_path, supervision_grace_s=0.3, supervision_tick_s=0.1, supervision_registry_refresh_s=0.2
    ) as env:
        eb, rx = env.bridge, env.receiver
        await env.add_device("pendant-3", check_in_interval_s=1)
        await rx.wait_for(lambda cs: bool(contacts_for(env, "pendant-3", "check_in_missed")), timeout=10)
        sup = eb.runtime.supervisor
        assert sup is not None and sup.grace_s == 0.3
        await heartbeat(env, "pendant-3")
        [alert] = contacts_for(env, "pendant-3", "check_in_missed")
        await rx.wait_for(
            lambda cs: any(c["alert_id"] == alert["alert_id"] and c["msg_type"] == "update" for c in cs), timeout=10
        )


async def test_a_device_last_heard_before_supervision_began_says_so(env: BridgeEnv, tmp_path: Path) -> None:
    """QA: a device heard long before this bridge began supervising it is timed from that start (it gets a
    full interval), and the reason says how long ago it was really last heard, not only the timed silence."""
    await env.add_device("pendant-old", profile_id="test-checkin-pendant")  # interval 1 s
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    await env.store.touch_device("pendant-old", long_ago, None)
    sup = Supervisor(env.bridge.runtime, grace_s=0.5, max_tick_s=0.2, db_path=tmp_path / "sup-old.db")
    await sup.start()
    try:
        await env.receiver.wait_for(lambda cs: bool(contacts_for(env, "pendant-old", "check_in_missed")), timeout=10)
    finally:
        await sup.stop()
    [contact] = contacts_for(env, "pendant-old", "check_in_missed")
    assert re.search(r"no check-in for \d s .*; last heard 72\d\d s ago, before supervision of it began",
                     contact["reason"]), contact["reason"]
    assert contact["attributes"]["last_seen"].startswith(long_ago.isoformat()[:16])
