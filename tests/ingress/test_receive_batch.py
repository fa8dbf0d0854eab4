"""`Ingress.receive_batch`: one sender's backlog through the ingress together (issue 27).

Each frame gets the Receipt `receive` would give it alone; presses fold into one commit; order holds (a
cancel never overtakes its SOS); a refused frame refuses only itself; nothing unstored is accepted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.alerts.pipeline import Pipeline
from bridge.core.events import StatusBus
from bridge.core.model import AlertState, Device
from bridge.devices.decoding import Frame
from bridge.devices.profiles import ProfileRegistry
from bridge.infra.metrics import Metrics
from bridge.ingress import Claim, Ingress
from bridge.store.sqlite import SqliteStore
from tests.support.factories import store_outage

PROFILES = ProfileRegistry.load()
CLAIM = Claim("mqtt", device_id="btn", tenant="acme")
META = {"ecosystem": "sosbridge", "topic": "sosbridge/acme/btn/alert"}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, Ingress]]:
    store = SqliteStore(tmp_path / "b.db")
    await store.open()
    pipeline = Pipeline(store, StatusBus(), Metrics(), kind_policy=PROFILES.allowed_kinds)
    await store.put_device(Device(device_id="btn", tenant_id="acme", profile_id="sosbridge-mqtt-button"))
    try:
        yield store, Ingress(store, pipeline, PROFILES, Metrics())
    finally:
        await store.close()


def frame(body: dict[str, object] | bytes) -> tuple[Frame, Claim, str | None]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Frame(payload=payload, meta=META), CLAIM, payload.decode("utf-8", "replace")


def press(n: int) -> tuple[Frame, Claim, str | None]:
    return frame({"kind": "sos", "message_id": f"p-{n}", "location": {"lat": 55.95, "lon": -3.19 + n / 1e4}})


def fix(n: int) -> tuple[Frame, Claim, str | None]:
    return frame({"action": "location", "message_id": f"l-{n}", "location": {"lat": 55.95, "lon": -3.18 + n / 1e4}})


async def test_a_backlog_of_presses_and_fixes_is_one_alert_every_press_counted(
    env: tuple[SqliteStore, Ingress],
) -> None:
    store, ingress = env
    backlog = [f(n) for n in range(100) for f in (press, fix)]
    receipts = await asyncio.wait_for(ingress.receive_batch(backlog), 30)
    assert len(receipts) == 200
    assert {r.status for r in receipts[0::2]} == {"accepted"}  # every press stored, none dropped
    assert {r.status for r in receipts[1::2]} <= {"accepted", "coalesced"}  # fixes: the newest is kept
    alert_ids = {r.last.alert_id for r in receipts[0::2] if r.last is not None}
    assert len(alert_ids) == 1
    alert = await store.get_alert(alert_ids.pop())
    assert alert is not None
    assert alert.escalation_count == 99  # 100 presses: the first alert and 99 folded in, none lost
    history = await store.history(alert.alert_id)
    assert [h.event for h in history].count("received") == 1
    # Every press's message id is remembered: the same backlog again is all duplicates, no new press.
    again = await asyncio.wait_for(ingress.receive_batch([press(n) for n in range(100)]), 30)
    assert {r.last.outcome for r in again if r.last is not None} == {"duplicate"}
    stored = await store.get_alert(alert.alert_id)
    assert stored is not None and stored.escalation_count == 99


async def test_a_cancel_in_the_backlog_never_overtakes_its_sos(env: tuple[SqliteStore, Ingress]) -> None:
    store, ingress = env
    backlog = [press(1), fix(1), frame({"action": "cancel", "message_id": "c-1"})]
    sos, _fix, cancel = await asyncio.wait_for(ingress.receive_batch(backlog), 30)
    assert sos.status == "accepted" and sos.last is not None and sos.last.outcome == "created"
    assert cancel.status == "accepted" and cancel.last is not None
    assert (cancel.last.outcome, cancel.last.alert_id) == ("cancelled", sos.last.alert_id)
    alert = await store.get_alert(sos.last.alert_id)
    assert alert is not None and alert.state == AlertState.cancelled


async def test_a_broken_frame_refuses_only_itself(env: tuple[SqliteStore, Ingress]) -> None:
    _store, ingress = env
    backlog = [press(1), frame(b'{"kind": "sos", '), press(2), frame({"kind": "no-such-kind"})]
    first, broken, second, unknown = await asyncio.wait_for(ingress.receive_batch(backlog), 30)
    assert (broken.status, broken.code) == ("refused", "invalid")
    assert unknown.status == "refused"
    assert first.status == second.status == "accepted"
    assert first.last is not None and second.last is not None
    assert first.last.alert_id == second.last.alert_id


async def test_nothing_unstored_is_accepted_and_a_redelivery_passes(env: tuple[SqliteStore, Ingress]) -> None:
    store, ingress = env
    backlog = [press(1), fix(1), press(2)]
    with store_outage(store):
        receipts = await asyncio.wait_for(ingress.receive_batch(backlog), 30)
    # The presses are not stored, so not acknowledged (the fix, with no alert open, only touches the device).
    assert (receipts[0].status, receipts[2].status) == ("not_stored", "not_stored")
    assert not receipts[0].acknowledge and not receipts[2].acknowledge
    assert await store.open_alert_for_device("btn") is None
    # The broker redelivers: nothing was remembered as stored, so the presses raise the alert now.
    again = await asyncio.wait_for(ingress.receive_batch(backlog), 30)
    assert again[0].status == "accepted" and again[0].last is not None and again[0].last.outcome == "created"
