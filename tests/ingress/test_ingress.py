"""The ingress: every profile's samples through the real ingress path, identity and debounce checks as
every transport states them (Claims), edges, and the lanes' folding and coalescing.

Frames are the profiles' own cited samples (hardware/profiles/*.yaml, `source` on each sample).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.alerts.pipeline import Pipeline, SubmitResult
from bridge.core.events import StatusBus
from bridge.core.model import AlertKind, Device, Observation
from bridge.devices.decoding import Decoded, Frame
from bridge.devices.profiles import DeviceProfile, ProfileRegistry, Sample, topic_bindings, topic_patterns
from bridge.infra.metrics import Metrics
from bridge.ingress import Claim, Ingress
from bridge.ingress.edges import EdgeMemory, edges
from bridge.ingress.lanes import Coalesced, Lanes, fold
from bridge.store.sqlite import SqliteStore
from tests.support.factories import store_outage

PROFILES = ProfileRegistry.load()
CASES = [(p, s) for p in PROFILES.profiles.values() for s in p.samples]


@dataclass
class Env:
    store: SqliteStore
    ingress: Ingress
    metrics: Metrics


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = SqliteStore(tmp_path / "i.db")
    await store.open()
    metrics = Metrics()
    pipeline = Pipeline(store, StatusBus(), metrics, kind_policy=PROFILES.allowed_kinds)
    try:
        yield Env(store, Ingress(store, pipeline, PROFILES, metrics), metrics)
    finally:
        await store.close()



def frame_meta(profile: DeviceProfile, sample: Sample) -> dict[str, str]:
    """The sample's metadata plus what the transport adds (ecosystem, path, protocol: the `match` keys)."""
    meta = {k: v.split(" | ")[0].strip() for k, v in profile.match.items()}
    return meta | sample.meta


def expected_status(sample: Sample) -> tuple[str, str]:
    actions = [e.action for e in sample.expect]
    if sample.expect_error:
        return "refused", ""
    if not actions:
        return "ignored", "not_an_event"
    if set(actions) == {"unmatched"}:
        return "unmatched", "unmatched"
    if all(e.action == "restore" and e.state_on is False for e in sample.expect):
        return "ignored", "level_held"  # a level that was never high: nothing to restore
    if "alert" in actions or set(actions) <= {"location", "heartbeat", "restore"}:
        return "accepted", ""
    return "refused", "nothing_to_cancel"  # a cancel with no open alert went all the way to the pipeline


@pytest.mark.parametrize(("profile", "sample"), CASES, ids=[f"{p.id}:{s.name}" for p, s in CASES])
async def test_profile_sample_through_the_ingress(env: Env, profile: DeviceProfile, sample: Sample) -> None:
    frame = sample.frame().model_copy(update={"meta": frame_meta(profile, sample)})
    # A profile whose topic binds a {scheme} level: the device carries that identifier (docs/devices/index.md).
    bound = {k: v for pattern in topic_patterns(profile)
             for k, v in (topic_bindings(pattern, frame.meta.get("topic", "")) or {}).items()}
    device = Device(device_id="dev-1", profile_id=profile.id, identifiers=bound)
    await env.store.put_device(device)
    receipt = await env.ingress.receive(frame, Claim(profile.transport, device_id="dev-1"))
    status, code = expected_status(sample)
    assert (receipt.status, receipt.code if code else "") == (status, code), receipt.reason
    kinds = [e.kind for e in sample.expect if e.action == "alert" and e.kind is not None]
    if kinds:
        alert = await env.store.open_alert_for_device("dev-1")
        assert alert is not None and alert.kind == kinds[0]


# -- identity, as each transport claims it ----------------------------------------------------------------
async def test_identity_checks(env: Env) -> None:
    await env.store.put_device(Device(device_id="btn", tenant_id="acme", profile_id="sosbridge-mqtt-button"))
    await env.store.put_device(Device(device_id="ws", profile_id="lorawan-milesight-ws101",
                                      identifiers={"deveui": "24e124535b123456"}))
    await env.store.put_device(Device(device_id="fob", profile_id="zigbee2mqtt-tuya-ts0215a-sos",
                                      identifiers={"z2m": "zigbee2mqtt/fob"}))
    sos = Frame(payload=b'{"kind": "sos"}', meta={"ecosystem": "sosbridge", "topic": "sosbridge/acme/btn/alert"})
    # Our own topic names the tenant: another tenant's topic cannot speak for the device.
    other = await env.ingress.receive(sos, Claim("mqtt", device_id="btn", tenant="evil"))
    assert (other.status, other.code) == ("refused", "unknown_device")
    # A device whose profile speaks zigbee2mqtt cannot speak on our button topic.
    await env.store.put_device(Device(device_id="fob2", tenant_id="acme", profile_id="zigbee2mqtt-tuya-ts0215a-sos"))
    wrong = await env.ingress.receive(sos, Claim("mqtt", device_id="fob2", tenant="acme"))
    assert (wrong.status, wrong.code) == ("refused", "wrong_topic")
    # A DevEUI inside the uplink must be the one bound to the device (ChirpStack sample, wrong DevEUI).
    profile = PROFILES.get("lorawan-milesight-ws101")
    assert profile is not None
    uplink = profile.samples[0].frame()
    spoofed = uplink.model_copy(update={
        "payload": uplink.payload.replace(b"24e124535b123456", b"24e124535b999999"),
        "meta": frame_meta(profile, profile.samples[0])})
    mismatch = await env.ingress.receive(spoofed, Claim("mqtt", identifiers=(("deveui", "24e124535b123456"),)),
                                         ref_scheme="deveui")
    assert (mismatch.status, mismatch.code) == ("refused", "identity_mismatch")
    # Unknown identifiers are refused and counted, with the sender named as the transport claimed it.
    ghost = await env.ingress.receive(Frame(payload=b"{}", meta={"ecosystem": "zigbee2mqtt"}),
                                      Claim("mqtt", identifiers=(("z2m", "zigbee2mqtt/ghost"),), label="z2m 'ghost'"))
    assert ghost.status == "refused" and ghost.reason == "z2m 'ghost' is not registered"
    assert env.metrics.rejected_count("mqtt", "unknown_device") == 2
    assert env.metrics.rejected_count("mqtt", "identity_mismatch") == 1


async def test_debounce_counts_only_stored_presses(env: Env) -> None:
    await env.store.put_device(Device(device_id="fob", profile_id="zigbee2mqtt-tuya-ts0215a-sos"))
    press = Frame(payload=b'{"action": "emergency"}', meta={"ecosystem": "zigbee2mqtt", "subtopic": ""})
    claim = Claim("mqtt", device_id="fob")
    with store_outage(env.store):  # the first press is not stored ...
        assert (await env.ingress.receive(press, claim)).status == "not_stored"
    first = await env.ingress.receive(press, claim)  # ... so its redelivery is not a ghost press
    assert first.status == "accepted" and first.last is not None and first.last.outcome == "created"
    ghost = await env.ingress.receive(press, claim)  # the radio repeating the press within 2 s
    assert (ghost.status, ghost.code) == ("ignored", "debounced")


async def test_level_not_stored_passes_again(env: Env) -> None:
    await env.store.put_device(Device(device_id="zone", profile_id="zigbee2mqtt-feibit-seb01zb"))
    up = Frame(payload=b'{"sos": true, "tamper": false}', meta={"ecosystem": "zigbee2mqtt", "subtopic": ""})
    claim = Claim("mqtt", device_id="zone")
    with store_outage(env.store):
        assert (await env.ingress.receive(up, claim)).status == "not_stored"
    assert (await env.ingress.receive(up, claim)).status == "accepted"
    held = await env.ingress.receive(up, claim)
    assert (held.status, held.code) == ("ignored", "level_held")


# -- pure parts ------------------------------------------------------------------------------------------------
def test_edges_pass_only_changes() -> None:
    memory = EdgeMemory()
    high = Decoded(action="alert", kind=AlertKind.sos, state_key="sos", state_on=True)
    low = Decoded(action="restore", kind=AlertKind.sos, state_key="sos", state_on=False)
    press = Decoded(action="alert", kind=AlertKind.panic)
    table = [([low], 0, 1), ([high, press], 2, 0), ([high], 0, 1), ([high, press], 1, 1), ([low], 1, 0)]
    for events, passed_n, held_n in table:
        passed, held, levels = edges(events, "d", memory)
        assert (len(passed), held) == (passed_n, held_n)
        for key, level in levels:
            memory.set("d", key, level)


def test_fold_counts_every_press_and_keeps_ids() -> None:
    obs = [Observation(device_id="d", transport="mqtt", kind=AlertKind.sos, message_id=f"m{i}") for i in range(4)]
    folded = fold(obs)
    assert folded.presses == 4 and folded.message_id == "m0" and folded.also_message_ids == ["m1", "m2", "m3"]


async def test_lanes_serve_emergencies_first_fold_presses_and_coalesce_fixes() -> None:
    gate = asyncio.Event()
    seen: list[Observation] = []

    async def submit(obs: Observation, device: Device | None) -> SubmitResult:
        seen.append(obs)
        await gate.wait()
        return SubmitResult("a1", "created", None)

    coalesced: list[Observation] = []
    lanes = Lanes(submit, coalesced.append)

    def fix(i: int) -> Observation:
        return Observation(device_id="d", transport="mqtt", action="location", message_id=f"l{i}")

    def press(i: int) -> Observation:
        return Observation(device_id="d", transport="mqtt", kind=AlertKind.sos, message_id=f"p{i}")

    tasks = [asyncio.create_task(lanes.run(fix(0)))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(lanes.run(fix(i))) for i in range(1, 4)]
    tasks += [asyncio.create_task(lanes.run(press(i))) for i in range(5)]
    other = asyncio.create_task(lanes.run(Observation(device_id="e", transport="mqtt", kind=AlertKind.sos)))
    await asyncio.sleep(0.01)
    assert [o.device_id for o in seen] == ["d", "e"]  # one in flight per device; e is not behind d
    gate.set()
    results = await asyncio.gather(*tasks, other, return_exceptions=True)
    # fix 1 and 2 were replaced by newer fixes before their turn; the 5 presses went as one submit, ahead
    # of the last fix.
    assert [isinstance(r, Coalesced) for r in results[:4]] == [False, True, True, False]
    assert [o.message_id for o in coalesced] == ["l1", "l2"]
    assert [(o.device_id, o.action, o.presses) for o in seen] == [
        ("d", "location", 1), ("e", "alert", 1), ("d", "alert", 5), ("d", "location", 1)]
    assert lanes.active == 0


async def test_a_stored_frame_repeated_is_a_duplicate_without_decoding(env: Env,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    await env.store.put_device(Device(device_id="btn", tenant_id="acme", profile_id="sosbridge-mqtt-button"))
    press = Frame(payload=b'{"kind": "sos", "message_id": "m-1"}', meta={"ecosystem": "sosbridge"})
    claim = Claim("mqtt", device_id="btn", tenant="acme")
    first = await env.ingress.receive(press, claim)
    assert first.last is not None and first.last.outcome == "created"
    import bridge.ingress.ingress as ingress_module

    def no_decoding(frame: Frame, profile: object) -> object:
        raise AssertionError("a repeat of a stored frame must not be decoded again")

    monkeypatch.setattr(ingress_module, "decode_frame", no_decoding)
    again = await env.ingress.receive(press, claim)
    assert again.status == "accepted" and again.last is not None
    assert (again.last.outcome, again.last.alert_id) == ("duplicate", first.last.alert_id)


async def test_a_repeated_frame_without_message_id_is_a_new_press(env: Env) -> None:
    """zigbee2mqtt without last_seen: the same bytes twice are two presses (an escalation), never skipped."""
    await env.store.put_device(Device(device_id="fob", profile_id="zigbee2mqtt-tuya-ts0215a-sos"))
    press = Frame(payload=b'{"action": "emergency"}', meta={"ecosystem": "zigbee2mqtt", "subtopic": ""})
    claim = Claim("mqtt", device_id="fob")
    first = await env.ingress.receive(press, claim)
    await asyncio.sleep(2.1)  # past the profile's 2 s debounce: a real second press
    second = await env.ingress.receive(press, claim)
    assert first.last is not None and second.last is not None
    assert (first.last.outcome, second.last.outcome) == ("created", "escalated")
