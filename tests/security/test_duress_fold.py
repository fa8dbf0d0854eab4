"""Issue 23 item 1: a silent panic or a duress folded into an open fall / medical alert is never stood down
from the device side, on any transport that can cancel (docs/voice/duress.md).

The table is every transport by (raised silent, folded silent, folded duress), then a device cancel, plus one
control row per transport (an audible panic folded in) whose cancel must still stand the alert down, so
each row proves the cancel really reached the pipeline. Everything runs for real on loopback: the embedded
bridge and reference receiver, Mosquitto, SIA DC-09 over TCP, CoAP over UDP, the Assist route over HTTP.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiocoap.numbers.codes import Code

from bridge.alerts.pipeline import DURESS_CANCEL_REASON, held_under_duress
from bridge.core.model import Alert, AlertKind, AlertState, Device, Person
from simulator.devices.coap import VirtualCoapDevice
from simulator.devices.dc09 import VirtualPanel
from skills.alexa.speech import say, state_speech
from tests.device_adapters.test_mqtt_adapter import Listener, make_env
from tests.support.bridges import running_bridge
from tests.support.factories import make_alert, until
from tests.support.ports import free_port

Step = str  # "alarm" (audible fall/medical), "silent_panic", "duress", "audible_panic"
SCENARIOS: dict[str, list[Step]] = {
    "raised_silent": ["silent_panic"],
    "folded_silent": ["alarm", "silent_panic"],
    "folded_duress": ["alarm", "duress"],
    "control_folded_audible": ["alarm", "audible_panic"],  # no coercion signal: the cancel stands it down
}
HELD = [s for s in SCENARIOS if not s.startswith("control")]
TIMEOUT = 10.0


# -- the rule itself, pure ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "silent", "folded", "held"),
    [
        (AlertKind.duress, True, {}, True),
        (AlertKind.panic, True, {}, True),
        (AlertKind.sos, True, {}, True),
        (AlertKind.fall, False, {"sos": 1}, False),  # an audible SOS folded in
        (AlertKind.fall, True, {}, False),  # a silent fall alone is not a coercion signal
        (AlertKind.medical, True, {"fall": 2}, False),
        (AlertKind.fall, True, {"sos": 1}, True),  # the finding: a silent SOS folded into a fall
        (AlertKind.medical, True, {"panic": 1}, True),
        (AlertKind.fall, True, {"duress": 1}, True),
        (AlertKind.fall, False, {"duress": 1}, True),  # a duress is held however it arrived
        (AlertKind.fall, True, ["fall", "panic"], True),  # counts stored as a list by older versions
    ],
)
def test_held_under_duress_sees_what_was_folded_in(
    kind: AlertKind, silent: bool, folded: Any, held: bool
) -> None:
    alert = make_alert(kind=kind, silent=silent, attributes={"escalation_kinds": folded} if folded else {})
    assert held_under_duress(alert) is held


# -- one driver per transport ---------------------------------------------------------------------------
@dataclass
class Rig:
    """One device on one transport: `send(step)` raises or folds, `cancel(silent_from_start)` cancels and
    asserts the device's answer against the docs' table; the store and the platform's contacts are shared."""

    transport: str
    device_id: str
    store: Any
    rx: Any
    send: Callable[[Step], Awaitable[None]]
    cancel: Callable[[bool, str], Awaitable[None]]

    def contacts(self) -> list[dict[str, Any]]:
        return [c for c in self.rx.contacts if c["device"]["id"] == self.device_id]

    async def wait_contacts(self, n: int) -> list[dict[str, Any]]:
        await self.rx.wait_for(lambda cs: len(self.contacts()) >= n, TIMEOUT)
        return self.contacts()


RigFactory = Callable[[Path, Any], contextlib.AbstractAsyncContextManager[Rig]]
HTTP_BODIES: dict[Step, dict[str, Any]] = {
    "alarm": {"kind": "fall"},
    "silent_panic": {"kind": "sos", "silent": True},
    "duress": {"kind": "duress"},
    "audible_panic": {"kind": "sos"},
}


@contextlib.asynccontextmanager
async def http_rig(tmp_path: Path, _request: Any) -> AsyncIterator[Rig]:
    async with running_bridge(tmp_path) as env:
        token = await env.add_device("wearable-1", profile_id="sosbridge-http-wearable")
        async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=TIMEOUT) as c:

            async def send(step: Step) -> None:
                r = await c.post("/v1/alerts", json={**HTTP_BODIES[step], "message_id": secrets.token_hex(6)})
                assert r.status_code == 202, r.text

            async def cancel(_silent_from_start: bool, alert_id: str) -> None:
                r = await c.post(f"/v1/alerts/{alert_id}/cancel", json={"reason": "false_alarm"})
                assert r.status_code == 202 and r.json()["state"] == "cancelled", r.text
                assert (await c.get(f"/v1/alerts/{alert_id}")).json()["state"] == "cancelled"

            yield Rig("http", "wearable-1", env.store, env.receiver, send, cancel)


@contextlib.asynccontextmanager
async def mqtt_rig(tmp_path: Path, request: Any) -> AsyncIterator[Rig]:
    broker = request.getfixturevalue("mosquitto_url")
    monkeypatch = request.getfixturevalue("monkeypatch")
    async with make_env(tmp_path, broker, monkeypatch) as env, env.running():
        device_id = f"button-{secrets.token_hex(3)}"
        device = await env.add(device_id, "sosbridge-mqtt-button")
        sim = env.sim(device)
        listener = Listener(broker, [f"sosbridge/acme/{device_id}/status"])
        try:
            await listener.ready()

            async def send(step: Step) -> None:
                body = HTTP_BODIES[step]
                await sim.alert(body["kind"], silent=bool(body.get("silent")))

            async def cancel(_silent_from_start: bool, _alert_id: str) -> None:
                seen = len(listener.messages)
                await sim.alert("sos", action="cancel")
                # The button's retained status topic (its LED) shows what a cancel looks like.
                await until(lambda: any(b["state"] == "cancelled" for _, b in listener.messages[seen:]), TIMEOUT)

            yield Rig("mqtt", device_id, env.store, env.rx, send, cancel)
        finally:
            listener.close()


CID_EVENTS: dict[Step, tuple[str, str]] = {
    "alarm": ("1", "100"),  # medical
    "silent_panic": ("1", "122"),  # silent panic
    "duress": ("1", "121"),
    "audible_panic": ("1", "120"),
}


@contextlib.asynccontextmanager
async def dc09_rig(tmp_path: Path, _request: Any) -> AsyncIterator[Rig]:
    port = free_port()
    async with running_bridge(tmp_path, dc09_port=port) as env:
        await env.store.put_device(Device(device_id="panel-1", profile_id="dc09-alarm-panel",
                                          identifiers={"dc09": "ABC1"}, person=Person(name="Keyholder")))
        panel = VirtualPanel("127.0.0.1", port, "ABC1", None)

        async def send(step: Step) -> None:
            answer = await panel.send(panel.cid(*CID_EVENTS[step]))
            assert answer is not None and answer.token == "ACK"

        async def cancel(_silent_from_start: bool, _alert_id: str) -> None:
            answer = await panel.send(panel.cid("1", "406"))  # user cancel, acknowledged to the panel as usual
            assert answer is not None and answer.token == "ACK"

        yield Rig("dc09", "panel-1", env.store, env.receiver, send, cancel)


@contextlib.asynccontextmanager
async def coap_rig(tmp_path: Path, _request: Any) -> AsyncIterator[Rig]:
    port = free_port()
    async with running_bridge(tmp_path, coap_enabled=True, coap_port=port) as env:
        key = secrets.token_hex(32)
        await env.store.put_device(Device(device_id="pendant-1", profile_id="sosbridge-coap-device",
                                          person=Person(name="A")))
        await env.store.set_credential("pendant-1", "coap_hmac", key, hashed=False)
        device = VirtualCoapDevice("127.0.0.1", port, "pendant-1", key)
        try:

            async def send(step: Step) -> None:
                body = HTTP_BODIES[step]
                reply = await device.alert(body["kind"], silent=bool(body.get("silent")))
                assert reply.code == Code.CREATED or reply.code == Code.CHANGED, reply.code

            async def cancel(_silent_from_start: bool, alert_id: str) -> None:
                reply = await device.cancel(alert_id)
                assert reply.code == Code.CHANGED and reply.body["state"] == "cancelled"

            yield Rig("coap", "pendant-1", env.store, env.receiver, send, cancel)
        finally:
            await device.close()


@contextlib.asynccontextmanager
async def assist_rig(tmp_path: Path, _request: Any) -> AsyncIterator[Rig]:
    """Home Assistant: the fall and panic-button blueprints post to /v1/alerts with HA's device token; the
    duress phrase, "I need help" and the cancel go through the Assist route."""
    async with running_bridge(tmp_path) as env:
        token = await env.add_device("ha-kitchen")
        async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=TIMEOUT) as c:

            async def send(step: Step) -> None:
                if step in ("alarm", "silent_panic"):
                    r = await c.post("/v1/alerts", json={**HTTP_BODIES[step], "message_id": secrets.token_hex(6)})
                    assert r.status_code == 202, r.text
                    return
                intent = "DuressIntent" if step == "duress" else "HelpIntent"
                r = await c.post("/v1/voice/assist", json={"intent": intent, "language": "en-GB"})
                assert r.status_code == 200, r.text

            async def cancel(silent_from_start: bool, _alert_id: str) -> None:
                r = await c.post("/v1/voice/assist", json={"intent": "CancelAlertIntent", "confirmed": True})
                assert r.status_code == 200, r.text
                # docs/voice/duress.md: nothing to cancel when nobody heard it raised, "cancelled" otherwise.
                expected = say("nothing_to_cancel", "en-GB") if silent_from_start else state_speech(
                    AlertState.cancelled, "en-GB")
                assert r.json()["speech"] == expected

            yield Rig("assist", "ha-kitchen", env.store, env.receiver, send, cancel)


TRANSPORTS: dict[str, RigFactory] = {
    "http": http_rig, "mqtt": mqtt_rig, "dc09": dc09_rig, "coap": coap_rig, "assist": assist_rig,
}


async def _raise(rig: Rig, steps: list[Step]) -> Alert:
    for n, step in enumerate(steps, start=1):
        await rig.send(step)
        await rig.wait_contacts(n)  # each step is one contact: the alert, then an escalation update
    contacts = rig.contacts()
    assert [c["msg_type"] for c in contacts] == ["alert"] + ["update"] * (len(steps) - 1)
    assert len({c["alert_id"] for c in contacts}) == 1  # folded into one alert
    alert = await rig.store.get_alert(contacts[0]["alert_id"])
    assert alert is not None and alert.is_open
    return alert


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_a_device_cancel_never_stands_down_a_coercion_signal(
    tmp_path: Path, request: pytest.FixtureRequest, transport: str, scenario: str
) -> None:
    steps = SCENARIOS[scenario]
    async with TRANSPORTS[transport](tmp_path, request) as rig:
        alert = await _raise(rig, steps)
        assert alert.silent is (scenario != "control_folded_audible")
        held = scenario in HELD
        # The device's answer is what the docs promise (asserted inside each rig's cancel).
        await rig.cancel(held and scenario == "raised_silent", alert.alert_id)
        contacts = await rig.wait_contacts(len(steps) + 1)
        answer = contacts[len(steps)]
        after = await rig.store.get_alert(alert.alert_id)
        if not held:
            assert answer["msg_type"] == "cancel" and after.state == AlertState.cancelled
            return
        # The platform: an update saying a cancel was asked for at the device, never a stand-down.
        assert answer["msg_type"] == "update", answer
        assert f"{DURESS_CANCEL_REASON} ({rig.transport})" in answer["reason"]
        assert answer["attributes"]["cancel_requests_under_duress"] == 1
        assert not any(c["msg_type"] == "cancel" for c in rig.contacts())
        # The alert stays open (the platform may have acknowledged it meanwhile) until the platform resolves it.
        assert after.is_open and after.state != AlertState.cancelled
        assert held_under_duress(after) and after.attributes["cancel_requests_under_duress"] == 1


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_what_was_folded_in_survives_a_restart(
    tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    """The rule reads only what each store keeps (the silent flag, the escalation counts): a bridge
    restarted between the fold and the cancel still holds the cancel."""
    overrides = {"redis_url": request.getfixturevalue("redis_url")} if store == "redis" else {}
    device_id = f"wearable-{secrets.token_hex(3)}"
    async with running_bridge(tmp_path / "first", auto_ack_s=None, **overrides) as env:
        token = await env.add_device(device_id)
        async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {token}"}) as c:
            for step in ("alarm", "silent_panic"):
                r = await c.post("/v1/alerts", json=HTTP_BODIES[step], timeout=TIMEOUT)
                assert r.status_code == 202, r.text
            alert_id = r.json()["alert_id"]
        await env.receiver.wait_for(lambda cs: len(cs) >= 2, TIMEOUT)
    (tmp_path / "second").mkdir()
    db = {} if store == "redis" else {"db": str(tmp_path / "first" / "bridge.db")}
    async with running_bridge(tmp_path / "second", auto_ack_s=None, **overrides, **db) as env:
        async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {token}"}) as c:
            r = await c.post(f"/v1/alerts/{alert_id}/cancel", json={}, timeout=TIMEOUT)
            assert r.status_code == 202 and r.json()["state"] == "cancelled", r.text
        [answer] = await env.receiver.wait_for(lambda cs: len(cs) >= 1, TIMEOUT)
        assert answer["msg_type"] == "update" and DURESS_CANCEL_REASON in answer["reason"]
        after = await env.store.get_alert(alert_id)
        assert after is not None and after.is_open and held_under_duress(after)
