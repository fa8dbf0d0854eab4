"""The check-in timer by Alexa (issue 24; docs/operations/checkin.md, docs/voice/alexa.md): genuine, signed
request envelopes through POST /alexa on a real bridge (the rig of tests/skills/test_alexa_skill.py), and
through the Lambda's signed relay (tests/skills/test_alexa_lambda.py). Start and stop are confirmed first;
the words are the voice route's (device_adapters/checkin/voice.py SPEECH), the same as Assist and Hermes;
a stop with the duress code is said exactly like a stop and raises a silent duress alert; a timer not
stopped raises `check_in_missed`. Time is moved through the service's clock only."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bridge.core.model import Device, Person
from device_adapters.checkin import timers
from device_adapters.checkin.voice import SPEECH
from skills.alexa.checkin import minutes_from_duration
from skills.alexa.lambda_function import build_lambda_handler
from tests.alerts.test_checkin import LAST_FIX, jump
from tests.skills.test_alexa_lambda import bridge, lambda_settings  # noqa: F401 - `bridge` is a fixture
from tests.skills.test_alexa_skill import STOP_SAMPLE, Stack, ca, leaf, speech, stack  # noqa: F401 - fixtures
from tests.support.alexa import envelopes

EN = SPEECH["en"]
DEVICE = "alexa-kitchen"


@pytest.mark.parametrize(("value", "minutes"), [
    ("PT30M", 30.0), ("PT1H30M", 90.0), ("P1D", 1440.0), ("PT90S", 1.5), ("?", None), ("", None), (None, None),
    ("PT0M", None), ("30", None),
])
def test_amazon_duration_to_minutes(value: str | None, minutes: float | None) -> None:
    assert minutes_from_duration(value) == minutes


def intent(st: Stack, name: str, confirmation: str = "NONE", **slots: str) -> dict[str, Any]:
    env = st.current(STOP_SAMPLE, intent=name, confirmation=confirmation)
    env["request"]["intent"]["slots"] = {k: {"name": k, "value": v, "confirmationStatus": "NONE"}
                                         for k, v in slots.items()}
    return env


async def register(st: Stack) -> None:
    alexa_device = envelopes.load(STOP_SAMPLE)["context"]["System"]["device"]["deviceId"]
    await st.eb.runtime.store.put_device(Device(
        device_id=DEVICE, identifiers={"alexa_device": alexa_device}, person=Person(name="Pat", language="en-GB"),
        last_location=LAST_FIX))


def service(st: Stack):  # type: ignore[no-untyped-def]
    found = timers(st.eb.runtime)
    assert found is not None
    return found


async def test_an_unregistered_alexa_cannot_start_a_check_in(stack: Stack) -> None:  # noqa: F811
    resp = await stack.post(intent(stack, "CheckInStartIntent", duration="PT30M"))
    assert speech(resp) == EN["not_registered"]
    assert resp.json()["response"]["shouldEndSession"] is True


async def test_check_on_me_is_confirmed_then_extended_asked_about_and_stopped(stack: Stack) -> None:  # noqa: F811
    await register(stack)
    svc = service(stack)
    # "Check on me in 30 minutes": asked first, nothing started yet.
    resp = await stack.post(intent(stack, "CheckInStartIntent", duration="PT30M"))
    assert speech(resp) == EN["confirm_start"].format(minutes="30 minutes")
    body = resp.json()["response"]
    assert body["shouldEndSession"] is False and body["directives"][0]["type"] == "Dialog.ConfirmIntent"
    assert body["directives"][0]["updatedIntent"]["slots"]["duration"]["value"] == "PT30M"
    assert await svc.current(DEVICE) is None
    assert speech(await stack.post(intent(stack, "CheckInStartIntent", "DENIED", duration="PT30M"))) == \
        EN["start_denied"]
    assert await svc.current(DEVICE) is None
    # "Yes": started, on the alexa channel.
    resp = await stack.post(intent(stack, "CheckInStartIntent", "CONFIRMED", duration="PT30M"))
    assert speech(resp) == EN["started"].format(minutes="30 minutes")
    running = await svc.current(DEVICE)
    assert running is not None and running.channel == "alexa" and 1790 <= running.due_at - time.time() <= 1800
    assert speech(await stack.post(intent(stack, "CheckInStatusIntent"))) == \
        EN["status"].format(remaining="30 minutes")
    assert speech(await stack.post(intent(stack, "CheckInExtendIntent", duration="PT10M"))) == \
        EN["extended"].format(remaining="40 minutes")
    # "I'm safe": asked, "no" keeps it, "yes" stops it.
    resp = await stack.post(intent(stack, "CheckInStopIntent"))
    assert speech(resp) == EN["confirm_stop"]
    assert resp.json()["response"]["directives"][0]["type"] == "Dialog.ConfirmIntent"
    assert speech(await stack.post(intent(stack, "CheckInStopIntent", "DENIED"))) == EN["stop_denied"]
    assert await svc.current(DEVICE) is not None
    assert speech(await stack.post(intent(stack, "CheckInStopIntent", "CONFIRMED"))) == EN["stopped"]
    assert await svc.current(DEVICE) is None
    # Nothing running: "I'm safe" is not asked about.
    resp = await stack.post(intent(stack, "CheckInStopIntent"))
    assert speech(resp) == EN["no_timer"] and resp.json()["response"]["shouldEndSession"] is True
    await asyncio.sleep(0.3)
    assert [c for c in stack.rx.contacts if c["device"]["id"] == DEVICE] == []


async def test_a_stop_with_the_duress_code_sounds_like_a_stop_and_raises_silent_duress(stack: Stack) -> None:  # noqa: F811
    await register(stack)
    await stack.eb.runtime.store.set_credential(DEVICE, "checkin_duress", "4711")
    spoken: dict[str, list[str]] = {}
    for code in ("1234", "4711"):  # a wrong code is an ordinary stop; the duress code looks the same
        await stack.post(intent(stack, "CheckInStartIntent", "CONFIRMED", duration="PT20M"))
        asked = speech(await stack.post(intent(stack, "CheckInStopIntent", code=code)))
        done = speech(await stack.post(intent(stack, "CheckInStopIntent", "CONFIRMED", code=code)))
        status = speech(await stack.post(intent(stack, "CheckInStatusIntent")))
        spoken[code] = [asked, done, status]
    assert spoken["1234"] == spoken["4711"] == [EN["confirm_stop"], EN["stopped"], EN["no_timer"]]
    contact = await stack.rx.first(lambda c: c["device"]["id"] == DEVICE)
    assert contact["kind"] == "duress" and contact["silent"] is True
    await asyncio.sleep(0.3)
    assert len([c for c in stack.rx.contacts if c["device"]["id"] == DEVICE]) == 1


async def test_a_check_in_not_stopped_raises_an_alert(stack: Stack) -> None:  # noqa: F811
    await register(stack)
    resp = await stack.post(intent(stack, "CheckInStartIntent", "CONFIRMED", duration="PT5M"))
    assert speech(resp) == EN["started"].format(minutes="5 minutes")
    jump(service(stack), 6 * 60)
    contact = await stack.rx.first(lambda c: c["device"]["id"] == DEVICE)
    assert contact["kind"] == "check_in_missed" and contact["silent"] is False
    assert contact["location"]["lat"] == pytest.approx(LAST_FIX.lat)


async def test_the_lambda_runs_a_check_in_over_the_relay(bridge) -> None:  # noqa: F811
    eb, _rx = bridge
    alexa_device = envelopes.load(STOP_SAMPLE)["context"]["System"]["device"]["deviceId"]
    await eb.runtime.store.put_device(Device(device_id=DEVICE, identifiers={"alexa_device": alexa_device}))
    handler = build_lambda_handler(lambda_settings(eb.url))

    async def say(name: str, confirmation: str = "NONE", **slots: str) -> str:
        env = envelopes.current(envelopes.load(STOP_SAMPLE), intent=name, confirmation=confirmation)
        env["request"]["intent"]["slots"] = {k: {"name": k, "value": v} for k, v in slots.items()}
        out = await asyncio.to_thread(handler, env, None)
        return str(out["response"]["outputSpeech"]["ssml"]).removeprefix("<speak>").removesuffix("</speak>")

    assert await say("CheckInStopIntent") == EN["no_timer"]
    assert await say("CheckInStartIntent", "CONFIRMED", duration="PT15M") == EN["started"].format(minutes="15 minutes")
    svc = timers(eb.runtime)
    assert svc is not None and await svc.current(DEVICE) is not None
    assert await say("CheckInStopIntent") == EN["confirm_stop"]
    assert await say("CheckInStopIntent", "CONFIRMED") == EN["stopped"]
    assert await svc.current(DEVICE) is None
