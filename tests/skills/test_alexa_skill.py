"""End to end: genuine Alexa request envelopes through POST /alexa on a real bridge.

Each sample from tests/fixtures/alexa (sources in its SOURCES.md: jovotech/jovo-framework,
alexa-js/alexa-app, alexa/alexa-skills-kit-sdk-for-java) gets a current timestamp and a fresh request id,
is signed by a throwaway test CA whose root is the bridge's configured trust root, and is POSTed to an
EmbeddedBridge whose forwarder delivers to the reference receiver (EmbeddedReceiver). Amazon's Device
Address and directive APIs are a small HTTPS server on loopback (tests/support/alexa/amazon.py).
Everything is configured through SOSBRIDGE_ALEXA_* variables, as in production.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.alerts.pipeline import DURESS_CANCEL_REASON
from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import AlertState, CivicAddress, Device, Location, Person
from simulator.platform.receiver import EmbeddedReceiver
from skills.alexa.certs import CachedChainSource
from skills.alexa.service import unverified_device_id
from tests.support.alexa import envelopes
from tests.support.alexa.amazon import FakeAmazon
from tests.support.alexa.ca import CERT_URL, Leaf, TestCA
from tests.support.ports import free_port

SECRET = "alexa-test-platform-secret"
APP_IDS = (
    "amzn1.echo-sdk-ams.app.000000-d0ed-0000-ad00-000000d00ebe",
    "amzn1.ask.skill.5023bec0-da4f-4bfd-b17f-2df8826fce08",
)
GEO_SAMPLE = "intent-request-with-geolocation.derived.json"
CONSENT_SAMPLE = "intent-request-slots-consent-geolocation-interface.json"
OLD_CONSENT_SAMPLE = "intent-request-consent-token-apiendpoint.json"
STOP_SAMPLE = "stop-intent-request.derived.json"
POLICE_WORDS = ("police", "polizei", "help", "hilfe", "alert", "alarm", "999", "911", "112", "emergency")


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def leaf(ca: TestCA) -> Leaf:
    return ca.issue()


@dataclass
class Stack:
    eb: EmbeddedBridge
    rx: EmbeddedReceiver
    amazon: FakeAmazon
    leaf: Leaf
    client: httpx.AsyncClient

    async def post(self, env: dict[str, Any] | bytes, leaf: Leaf | None = None, cert_url: str = CERT_URL,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        body, signed_headers = envelopes.signed(leaf or self.leaf, env, cert_url)
        signed_headers.update(headers or {})
        return await self.client.post(f"{self.eb.url}/alexa", content=body, headers=signed_headers)

    def current(self, name: str, **kw: Any) -> dict[str, Any]:
        return envelopes.current(envelopes.load(name), api_endpoint=self.amazon.endpoint, **kw)

    async def contact_for(self, device_id: str) -> dict[str, Any]:
        contacts = await self.rx.wait_for(lambda cs: any(c["device"]["id"] == device_id for c in cs), timeout=10)
        return next(c for c in contacts if c["device"]["id"] == device_id)

    def rejected(self, reason: str) -> float:
        return self.eb.runtime.metrics.rejected_count("alexa", reason)


def _ack_wait(request: pytest.FixtureRequest) -> float:
    """Seconds a help request waits for the platform; tests that need an ack pass it indirectly."""
    return float(getattr(request, "param", 0.5))


@pytest.fixture
async def stack(request, tmp_path, monkeypatch, ca, leaf):
    cache = tmp_path / "alexa-certs"
    CachedChainSource(cache, None).store(CERT_URL, leaf.chain_pem)
    (tmp_path / "roots.pem").write_bytes(ca.root_pem)
    env = {
        "APPLICATION_IDS": ",".join(APP_IDS),
        "TRUST_ROOTS": str(tmp_path / "roots.pem"),
        "CERT_CACHE_DIR": str(cache),
        "CERT_FETCH": "false",
        "API_CA_BUNDLE": str(tmp_path / "roots.pem"),
        "ACK_WAIT_S": str(_ack_wait(request)),
        "API_TIMEOUT_S": "5",
    }
    for key, value in env.items():
        monkeypatch.setenv(f"SOSBRIDGE_ALEXA_{key}", value)
    amazon = FakeAmazon(ca)
    amazon.start()
    port = free_port()
    bridge_url = f"http://127.0.0.1:{port}"
    platform_token = "platform-" + SECRET  # the callbacks' own credential, never the webhook secret
    async with EmbeddedReceiver(
        secret=SECRET, bridge_url=bridge_url, auto_ack_s=None, platform_token=platform_token
    ) as rx:
        settings = Settings(
            db=str(tmp_path / "bridge.db"),
            data_dir=str(tmp_path),
            http_port=port,
            platform_url=rx.url,
            platform_secret=SECRET,
            platform_token=platform_token,
            retry_base_s=0.05,
        )
        async with EmbeddedBridge(settings) as eb, httpx.AsyncClient(timeout=30) as client:
            assert "alexa" in [a.name for a in eb.runtime.adapters]
            yield Stack(eb, rx, amazon, leaf, client)
    amazon.stop()


def speech(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    out = resp.json()["response"].get("outputSpeech") or {}
    return out.get("ssml", "").removeprefix("<speak>").removesuffix("</speak>")


async def test_launch_request_prompts_and_raises_nothing(stack: Stack) -> None:
    env = stack.current("launch-request.json")
    resp = await stack.post(env)
    assert "Say: I need help" in speech(resp)
    assert resp.json()["response"]["shouldEndSession"] is False
    device = unverified_device_id(env["context"]["System"]["device"]["deviceId"])
    assert await stack.eb.runtime.store.open_alert_for_device(device) is None


async def test_stop_intent_ends_session_without_cancelling(stack: Stack) -> None:
    resp = await stack.post(stack.current(STOP_SAMPLE))
    assert speech(resp) == "Goodbye."
    assert resp.json()["response"]["shouldEndSession"] is True


async def test_session_ended_gets_an_empty_response(stack: Stack) -> None:
    resp = await stack.post(stack.current("session-ended-request.json"))
    assert resp.status_code == 200
    assert "outputSpeech" not in resp.json()["response"]
    # The Java SDK's error variant, wrapped in the alexa-app envelope and given a timestamp.
    env = envelopes.load("session-ended-request.json")
    env["request"] = envelopes.load("session-ended-request-error.request-only.json")
    resp = await stack.post(envelopes.current(env))
    assert resp.status_code == 200 and "outputSpeech" not in resp.json()["response"]


async def test_unknown_intent_falls_back_in_the_callers_language(stack: Stack) -> None:
    # The de-DE capture as-is: MyNameIsIntent is not ours.
    text = speech(await stack.post(stack.current(CONSENT_SAMPLE)))
    assert text.startswith("Das kann ich leider nicht")


async def test_help_with_device_address(stack: Stack) -> None:
    env = stack.current(CONSENT_SAMPLE, intent="HelpIntent")
    alexa_device = env["context"]["System"]["device"]["deviceId"]
    stack.amazon.addresses[alexa_device] = (
        200,
        {"addressLine1": "Musterstraße 1", "city": "Berlin", "postalCode": "10115", "countryCode": "DE"},
    )
    resp = await stack.post(env)
    text = speech(resp)
    assert text.startswith("Dein Alarm wurde")
    assert "Hilfe ist unterwegs" not in text
    # The address was fetched with the request's access token, from the envelope's apiEndpoint.
    call = stack.amazon.address_calls()[-1]
    assert call.headers["Authorization"] == f"Bearer {env['context']['System']['apiAccessToken']}"
    # A progressive response was sent for this request while the alert was stored.
    directives = stack.amazon.directives()
    assert directives[-1]["header"]["requestId"] == env["request"]["requestId"]
    assert directives[-1]["directive"] == {"type": "VoicePlayer.Speak", "speech": "Ich sende deinen Alarm."}
    # The device supports Geolocation but sent none: ask for that permission (address worked).
    card = resp.json()["response"]["card"]
    assert card == {"type": "AskForPermissionsConsent", "permissions": ["alexa::devices:all:geolocation:read"]}

    contact = await stack.contact_for(unverified_device_id(alexa_device))
    assert contact["kind"] == "sos" and contact["silent"] is False
    assert contact["language"] == "de-DE"
    assert contact["verified"] is False
    assert contact["location"]["source"] == "fixed"
    assert contact["location"]["civic"]["a3"] == "Berlin" and contact["location"]["civic"]["country"] == "DE"
    assert contact["attributes"]["location_source"] == "alexa_device_address"
    assert "apiAccessToken" not in (contact["attributes"].get("raw") or "")


async def test_help_with_geolocation(stack: Stack) -> None:
    env = stack.current(GEO_SAMPLE, intent="HelpIntent")
    before = len(stack.amazon.address_calls())
    resp = await stack.post(env)
    assert speech(resp).startswith("Dein Alarm wurde")
    assert len(stack.amazon.address_calls()) == before  # geolocation wins; no address lookup
    contact = await stack.contact_for(unverified_device_id(env["context"]["System"]["device"]["deviceId"]))
    loc = contact["location"]
    assert (loc["lat"], loc["lon"], loc["accuracy_m"]) == (38.2, 28.3, 12.1)
    assert loc["source"] == "network" and contact["attributes"]["location_source"] == "alexa_geolocation"
    assert loc["age_s"] is not None and loc["age_s"] >= 5
    assert contact["language"] == "de-DE"


async def test_help_without_address_permission_falls_back_to_registered_address(stack: Stack) -> None:
    # alexa-app fixture: consent token but no locale; the stand-in Amazon answers 403 for this device.
    env = stack.current(OLD_CONSENT_SAMPLE, intent="HelpIntent")
    await stack.eb.runtime.store.put_device(
        Device(
            device_id="flat-21-speaker",
            person=Person(name="Test Person", language="en-GB"),
            registered_address=Location(
                source="registered_address",
                civic=CivicAddress(hno="21", a6="Test Street", a3="Glasgow", pc="G1 1AA"),
            ),
            identifiers={"alexa_device": env["context"]["System"]["device"]["deviceId"]},
        )
    )
    resp = await stack.post(env)
    text = speech(resp)
    assert "could not read this device's address" in text and "999" in text
    card = resp.json()["response"]["card"]
    assert card == {"type": "AskForPermissionsConsent", "permissions": ["read::alexa:device:all:address"]}
    assert stack.amazon.address_calls()[-1].path == "/v1/devices/MyDeviceId/settings/address"

    contact = await stack.contact_for("flat-21-speaker")
    assert contact["verified"] is True
    assert contact["language"] == "en-GB"
    assert contact["location"]["source"] == "registered_address"
    assert contact["location"]["civic"]["pc"] == "G1 1AA"
    assert contact["attributes"]["location_source"] == "registered_address"
    assert contact["attributes"]["location_permission"] == "missing"


async def test_account_linking_with_user_id(stack: Stack) -> None:
    env = stack.current(STOP_SAMPLE, intent="HelpIntent")
    await stack.eb.runtime.store.put_device(
        Device(device_id="linked-user", identifiers={"alexa_user": env["context"]["System"]["user"]["userId"]})
    )
    speech(await stack.post(env))
    contact = await stack.contact_for("linked-user")
    assert contact["verified"] is True and contact["language"] == "en-US"
    assert contact["attributes"]["identified_by"] == "alexa_user"


async def test_duress_phrase_raises_a_silent_alert_with_innocuous_speech(stack: Stack) -> None:
    env = stack.current(GEO_SAMPLE, intent="DuressIntent")
    env["request"]["locale"] = "en-GB"
    resp = await stack.post(env)
    text = speech(resp)
    assert text == "OK, noted."
    assert not any(word in text.lower() for word in POLICE_WORDS)
    assert "card" not in resp.json()["response"]
    assert all(d["header"]["requestId"] != env["request"]["requestId"] for d in stack.amazon.directives())
    contact = await stack.contact_for(unverified_device_id(env["context"]["System"]["device"]["deviceId"]))
    assert contact["silent"] is True and contact["kind"] == "duress"
    assert contact["language"] == "en-GB"
    assert contact["location"]["lat"] == 38.2
    # Asking for the status of a silent alert stays innocuous too.
    status = stack.current(GEO_SAMPLE, intent="StatusIntent")
    status["request"]["locale"] = "en-GB"
    assert speech(await stack.post(status)) == "OK, noted."
    # A confirmed "I'm OK" under coercion: answered as if there were no alert, never a stand-down.
    cancel = stack.current(GEO_SAMPLE, intent="CancelAlertIntent", confirmation="CONFIRMED")
    cancel["request"]["locale"] = "en-GB"
    assert speech(await stack.post(cancel)) == "You have no open alert to cancel."
    await stack.rx.wait_for(
        lambda cs: any(c["alert_id"] == contact["alert_id"] and c["msg_type"] == "update"
                       and DURESS_CANCEL_REASON in (c["reason"] or "") for c in cs)
    )
    alert = await stack.eb.runtime.store.get_alert(contact["alert_id"])
    assert alert is not None and alert.is_open
    assert not any(c["msg_type"] == "cancel" for c in stack.rx.contacts)


async def test_an_unconfirmed_cancel_under_duress_is_not_asked_about_and_held(stack: Stack) -> None:
    """Issue 24: after the duress phrase, "false alarm" got "Do you want to cancel your alert?", which says
    an alert exists. Now it is answered as Assist answers it, and the cancel is held (the platform hears
    it was asked for; the alert stays open)."""
    duress = stack.current(GEO_SAMPLE, intent="DuressIntent")
    duress["request"]["locale"] = "en-GB"
    assert speech(await stack.post(duress)) == "OK, noted."
    contact = await stack.contact_for(unverified_device_id(duress["context"]["System"]["device"]["deviceId"]))
    cancel = stack.current(GEO_SAMPLE, intent="CancelAlertIntent", confirmation="NONE")
    cancel["request"]["locale"] = "en-GB"
    resp = await stack.post(cancel)
    assert speech(resp) == "You have no open alert to cancel."
    body = resp.json()["response"]
    assert body["shouldEndSession"] is True and not body.get("directives")
    await stack.rx.wait_for(
        lambda cs: any(c["alert_id"] == contact["alert_id"] and c["msg_type"] == "update"
                       and DURESS_CANCEL_REASON in (c["reason"] or "") for c in cs)
    )
    alert = await stack.eb.runtime.store.get_alert(contact["alert_id"])
    assert alert is not None and alert.is_open and alert.attributes.get("cancel_requests_under_duress")
    assert not any(c["msg_type"] == "cancel" for c in stack.rx.contacts)


async def test_a_cancel_after_help_then_the_duress_phrase_is_asked_about_and_held(stack: Stack) -> None:
    """Raised aloud ("I need help"), made silent later: whoever is near heard an alert raised, so the usual
    confirmation is what they expect, and "yes" answers "cancelled" while the alert stays open."""
    help_env = stack.current(STOP_SAMPLE, intent="HelpIntent")
    speech(await stack.post(help_env))
    contact = await stack.contact_for(unverified_device_id(help_env["context"]["System"]["device"]["deviceId"]))
    assert speech(await stack.post(stack.current(STOP_SAMPLE, intent="DuressIntent"))) == "OK, noted."
    resp = await stack.post(stack.current(STOP_SAMPLE, intent="CancelAlertIntent", confirmation="NONE"))
    assert speech(resp) == "Do you want to cancel your alert?"
    assert resp.json()["response"]["directives"][0]["type"] == "Dialog.ConfirmIntent"
    resp = await stack.post(stack.current(STOP_SAMPLE, intent="CancelAlertIntent", confirmation="CONFIRMED"))
    assert speech(resp) == "Your alert is cancelled."
    alert = await stack.eb.runtime.store.get_alert(contact["alert_id"])
    assert alert is not None and alert.is_open
    assert not any(c["msg_type"] == "cancel" for c in stack.rx.contacts)


@pytest.mark.parametrize("stack", [6.0], indirect=True)
async def test_help_is_on_the_way_only_after_the_platform_acknowledged(stack: Stack) -> None:
    env = stack.current(STOP_SAMPLE, intent="HelpIntent")
    device = unverified_device_id(env["context"]["System"]["device"]["deviceId"])

    async def platform_acks() -> None:
        contact = await stack.contact_for(device)
        await stack.rx.receiver.callback(contact["alert_id"], "ack", "units dispatched")

    acker = asyncio.create_task(platform_acks())
    resp = await stack.post(env)
    await acker
    assert speech(resp).startswith("Your alert has been answered. Help is on the way.")
    alert_id = resp.json()["sessionAttributes"]["sosbridge_alert_id"]
    alert = await stack.eb.runtime.store.get_alert(alert_id)
    assert alert is not None and alert.state == AlertState.acknowledged


async def test_status_and_confirmed_cancel(stack: Stack) -> None:
    env = stack.current(STOP_SAMPLE, intent="HelpIntent")
    device = unverified_device_id(env["context"]["System"]["device"]["deviceId"])
    text = speech(await stack.post(env))
    assert "Help is on the way" not in text and "911" in text
    contact = await stack.contact_for(device)
    alert_id = contact["alert_id"]

    async def state() -> AlertState:
        alert = await stack.eb.runtime.store.get_alert(alert_id)
        assert alert is not None
        return alert.state

    # Status is answered from the alert's state in the bridge.
    status_text = speech(await stack.post(stack.current(STOP_SAMPLE, intent="StatusIntent")))
    assert status_text.startswith("Your alert has been")
    assert "Help is on the way" not in status_text
    await stack.rx.receiver.callback(alert_id, "ack")
    assert await state() == AlertState.acknowledged
    status_text = speech(await stack.post(stack.current(STOP_SAMPLE, intent="StatusIntent")))
    assert status_text == "Your alert has been answered. Help is on the way."
    # Issue 16: the platform's latest message is read out on the next status question.
    await stack.eb.runtime.ledger.platform_message(alert_id, "An ambulance is two minutes away.")
    status_text = speech(await stack.post(stack.current(STOP_SAMPLE, intent="StatusIntent")))
    assert status_text == ("Your alert has been answered. Help is on the way. "
                           "The control room says: An ambulance is two minutes away.")

    # "I'm OK" first asks for confirmation and changes nothing.
    resp = await stack.post(stack.current(STOP_SAMPLE, intent="CancelAlertIntent", confirmation="NONE"))
    assert speech(resp) == "Do you want to cancel your alert?"
    body = resp.json()["response"]
    assert body["shouldEndSession"] is False
    assert body["directives"][0]["type"] == "Dialog.ConfirmIntent"
    assert await state() == AlertState.acknowledged
    # A "no" keeps it open.
    resp = await stack.post(stack.current(STOP_SAMPLE, intent="CancelAlertIntent", confirmation="DENIED"))
    assert speech(resp) == "OK. Your alert stays open."
    assert await state() == AlertState.acknowledged
    # A "yes" cancels, and the platform gets a stand-down.
    resp = await stack.post(stack.current(STOP_SAMPLE, intent="CancelAlertIntent", confirmation="CONFIRMED"))
    assert speech(resp) == "Your alert is cancelled."
    assert await state() == AlertState.cancelled
    contacts = await stack.rx.wait_for(
        lambda cs: any(c["alert_id"] == alert_id and c["msg_type"] == "cancel" for c in cs)
    )
    assert any(c["msg_type"] == "cancel" for c in contacts if c["alert_id"] == alert_id)
    resp = await stack.post(stack.current(STOP_SAMPLE, intent="CancelAlertIntent", confirmation="CONFIRMED"))
    assert speech(resp) == "You have no open alert to cancel."


async def test_builtin_help_and_fallback(stack: Stack) -> None:
    text = speech(await stack.post(stack.current(STOP_SAMPLE, intent="AMAZON.HelpIntent")))
    assert "does not dial 911" in text
    text = speech(await stack.post(stack.current(STOP_SAMPLE, intent="AMAZON.FallbackIntent")))
    assert text.startswith("Sorry, I can't help with that")
    resp = await stack.post(stack.current(STOP_SAMPLE, intent="AMAZON.CancelIntent"))
    assert speech(resp) == "Goodbye."


@pytest.mark.parametrize(
    "case", ["tampered", "bad_cert_url", "wrong_san", "expired", "stale", "wrong_app", "untrusted", "unsigned"]
)
async def test_bad_requests_get_400_and_raise_no_alert(stack: Stack, ca: TestCA, case: str) -> None:
    now = datetime.now(UTC)
    env = stack.current(STOP_SAMPLE, intent="HelpIntent", now=now - timedelta(seconds=200) if case == "stale" else now)
    device = unverified_device_id(env["context"]["System"]["device"]["deviceId"])
    leaf, cert_url = stack.leaf, CERT_URL
    cache = CachedChainSource(Path(stack.eb.settings.data_dir) / "alexa-certs", None)
    if case in ("wrong_san", "expired", "untrusted"):
        leaf = {
            "wrong_san": lambda: ca.issue("example.com"),
            "expired": lambda: ca.issue(not_before=now - timedelta(days=9), not_after=now - timedelta(days=2)),
            "untrusted": lambda: TestCA("Impostor Root").issue(),
        }[case]()
        cert_url = f"https://s3.amazonaws.com/echo.api/echo-api-cert-{case}.pem"
        cache.store(cert_url, leaf.chain_pem)
    if case == "bad_cert_url":
        cert_url = "https://s3.amazonaws.com/not-echo.api/echo-api-cert.pem"
    if case == "wrong_app":
        env["context"]["System"]["application"]["applicationId"] = "amzn1.ask.skill.not-ours"
    body, headers = envelopes.signed(leaf, env, cert_url)
    if case == "tampered":
        body = body.replace(b"HelpIntent", b"HelpIntenT")
    if case == "unsigned":
        headers.pop("Signature-256")
    code = {
        "tampered": "signature", "bad_cert_url": "cert_url", "wrong_san": "cert_san", "expired": "cert_expired",
        "stale": "timestamp", "wrong_app": "application_id", "untrusted": "cert_untrusted", "unsigned": "headers",
    }[case]
    before = stack.rejected(code)
    resp = await stack.client.post(f"{stack.eb.url}/alexa", content=body, headers=headers)
    assert resp.status_code == 400
    assert stack.rejected(code) == before + 1
    assert await stack.eb.runtime.store.open_alert_for_device(device) is None
    assert stack.rx.contacts == []


async def test_oversized_body_is_refused(stack: Stack) -> None:
    resp = await stack.client.post(f"{stack.eb.url}/alexa", content=b"x" * (129 * 1024))
    assert resp.status_code == 413
