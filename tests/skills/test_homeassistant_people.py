"""Issue 24 on a real Home Assistant: voice replies under duress stay consistent and innocuous (item 3),
and the check-in timer by voice (item 2): the shipped package
skills/assist/homeassistant/packages/sos_bridge_checkin.yaml and its sentences, driven through Home
Assistant's conversation API against a real bridge delivering to the reference receiver. Started,
extended, asked about, stopped; stopped with the duress code (said exactly like a stop, a silent duress
alert at the platform); and not stopped (a check_in_missed alert). Home Assistant starts once for this
module, as in tests/skills/test_homeassistant.py, whose rig this reuses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from device_adapters.checkin import timers
from device_adapters.checkin.voice import SPEECH
from skills.alexa.speech import say
from tests.homeassistant_support import REMINDER_WEBHOOK
from tests.skills.test_homeassistant import Env, Rig, bridge_for, rig  # noqa: F401 - `rig` is the session fixture
from tests.support.paths import ROOT

# One xdist work unit with the other file on the session `rig` (tests/support/scheduling.py).
pytestmark = [pytest.mark.homeassistant, pytest.mark.timeout(300), pytest.mark.xdist_group("homeassistant")]

HA = ROOT / "skills" / "assist" / "homeassistant"
INTENTS = {"SosCheckIn", "SosCheckInExtend", "SosCheckInStop", "SosCheckInStatus"}


@pytest.mark.parametrize(("lang", "locale"), [("en", "en-GB"), ("de", "de-DE")])
def test_checkin_sentences_cover_every_intent_with_the_bridges_wording(lang: str, locale: str) -> None:
    doc = yaml.safe_load((HA / "custom_sentences" / lang / "sos_bridge_checkin.yaml").read_text())
    assert doc["language"] == lang and set(doc["intents"]) == INTENTS
    for intent in doc["intents"].values():
        for block in intent["data"]:
            assert block["slots"]["lang"] == locale
            assert block["slots"]["unreachable"] == say("bridge_unreachable", locale)


def env_timers(env: Env):  # type: ignore[no-untyped-def]
    found = timers(env.bridge.runtime)
    assert found is not None
    return found


async def test_check_on_me_by_voice_start_extend_status_stop(rig: Rig, tmp_path: Path) -> None:  # noqa: F811
    async with bridge_for(rig, tmp_path) as env:
        en = SPEECH["en"]
        assert await env.ha.aconverse("how long is left on my check-in") == en["no_timer"]
        said = await env.ha.aconverse("check on me in 20 minutes")
        assert said == en["started"].format(minutes="20 minutes")
        svc = env_timers(env)
        running = await svc.current("ha-home")
        assert running is not None and 1190 <= running.due_at - time.time() <= 1200
        assert await env.ha.aconverse("give me 10 more minutes") == en["extended"].format(remaining="30 minutes")
        assert await env.ha.aconverse("how long is left on my check-in") == en["status"].format(remaining="30 minutes")
        assert await env.ha.aconverse("stop my check-in") == en["stopped"]
        assert await svc.current("ha-home") is None
        await asyncio.sleep(0.3)
        assert env.rx.contacts == []


async def test_the_reminder_is_pushed_to_home_assistant_as_a_notification(rig: Rig, tmp_path: Path) -> None:  # noqa: F811
    """Issue 24 item 3: five minutes before a timer started by voice runs out, the bridge posts the reminder
    to the Home Assistant webhook the administrator gave the device, and the shipped package
    (packages/sos_bridge_checkin_reminder.yaml) shows it."""
    async with bridge_for(rig, tmp_path) as env:
        url = f"{env.ha.url}/api/webhook/{REMINDER_WEBHOOK}"
        await env.bridge.runtime.store.set_credential("ha-home", "checkin_reminder_url", url, hashed=False)
        assert (await env.ha.aconverse("check on me in 20 minutes")).startswith("OK.")
        svc = env_timers(env)
        svc.clock = lambda: time.time() + 16 * 60
        svc.poke()
        async with asyncio.timeout(20):
            while not [n for n in await env.ha.anotifications() if n["notification_id"] == "sos_bridge_checkin"]:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        [note] = [n for n in await env.ha.anotifications() if n["notification_id"] == "sos_bridge_checkin"]
        assert note["title"] == "Check-in"
        assert note["message"] == SPEECH["en"]["reminder"].format(remaining="4 minutes")
        timer = await svc.current("ha-home")
        assert timer is not None and timer.reminded and timer.reminded_at is not None
        assert env.rx.contacts == []  # a reminder is not an alert


async def test_a_voice_stop_with_the_duress_code_sounds_the_same(rig: Rig, tmp_path: Path) -> None:  # noqa: F811
    async with bridge_for(rig, tmp_path) as env:
        await env.bridge.runtime.store.set_credential("ha-home", "checkin_duress", "4711")
        assert (await env.ha.aconverse("check on me in 15 minutes")).startswith("OK.")
        assert await env.ha.aconverse("stop my check-in code 4711") == SPEECH["en"]["stopped"]
        contact = await env.contact(lambda c: c["msg_type"] == "alert")
        assert contact["kind"] == "duress" and contact["silent"] is True
        # Asked afterwards, whoever listens hears what a stopped timer sounds like.
        assert await env.ha.aconverse("how long is left on my check-in") == SPEECH["en"]["no_timer"]


async def test_german_check_in_runs_out_into_an_alert(rig: Rig, tmp_path: Path) -> None:  # noqa: F811
    async with bridge_for(rig, tmp_path) as env:
        de = SPEECH["de"]
        assert await env.ha.aconverse("melde dich in 5 Minuten", "de") == de["started"].format(minutes="5 Minuten")
        svc = env_timers(env)
        svc.clock = lambda: time.time() + 6 * 60
        svc.poke()
        contact = await env.contact(lambda c: c["msg_type"] == "alert")
        assert contact["kind"] == "check_in_missed" and contact["silent"] is False


async def test_after_the_duress_phrase_no_reply_says_an_alert_exists(rig: Rig, tmp_path: Path) -> None:  # noqa: F811
    """Issue 24: after the duress phrase, "help me" answered "help is on the way" and "false alarm" then
    "nothing to cancel", in front of whoever is listening. Now nothing said admits an alert, whatever is
    asked, while the platform still hears every request."""
    async with bridge_for(rig, tmp_path) as env:
        noted = say("duress_reply", "en-GB")
        assert await env.ha.aconverse("is the kettle on") == noted
        first = await env.contact(lambda c: c["msg_type"] == "alert")
        assert first["kind"] == "duress" and first["silent"] is True
        assert await env.ha.aconverse("help me") == noted
        assert await env.ha.aconverse("is help coming") == noted
        assert await env.ha.aconverse("false alarm") == say("nothing_to_cancel", "en-GB")
        assert await env.ha.aconverse("false alarm cancel my alert") == say("nothing_to_cancel", "en-GB")
        assert await env.ha.aconverse("is help coming") == say("no_alert", "en-GB")
        assert await env.ha.aconverse("help me") == noted
        # The platform heard the help requests and the coerced cancel; the alert is open and silent.
        await env.contact(lambda c: c["alert_id"] == first["alert_id"] and c["msg_type"] == "update"
                          and c["attributes"].get("cancel_requests_under_duress"))
        alert = await env.alert()
        assert alert is not None and alert.alert_id == first["alert_id"] and alert.silent and alert.is_open
        assert alert.escalation_count >= 2
        assert not any(c["msg_type"] == "cancel" for c in env.rx.contacts)
