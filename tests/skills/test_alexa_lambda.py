"""The Lambda variant (skills/alexa/lambda_function.py) against a real bridge over the signed relay.

Genuine samples from tests/fixtures/alexa (sources in its SOURCES.md), timestamps made
current; the Lambda runs in a worker thread as AWS would run it, forwarding over HTTP to an
EmbeddedBridge that delivers to the reference receiver.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from simulator.platform.receiver import EmbeddedReceiver
from skills.alexa.config import AlexaSettings
from skills.alexa.lambda_function import build_lambda_handler
from skills.alexa.relay import SIGNATURE_HEADER, TIMESTAMP_HEADER
from skills.alexa.service import unverified_device_id
from tests.support.alexa import envelopes
from tests.support.ports import free_port

SECRET = "lambda-test-platform"
RELAY = "lambda-relay-shared-secret"
APP = "amzn1.echo-sdk-ams.app.000000-d0ed-0000-ad00-000000d00ebe"


@pytest.fixture
async def bridge(tmp_path, monkeypatch):
    monkeypatch.setenv("SOSBRIDGE_ALEXA_APPLICATION_IDS", APP)
    monkeypatch.setenv("SOSBRIDGE_ALEXA_RELAY_SECRET", RELAY)
    monkeypatch.setenv("SOSBRIDGE_ALEXA_ACK_WAIT_S", "0.5")
    port = free_port()
    async with EmbeddedReceiver(secret=SECRET, bridge_url=f"http://127.0.0.1:{port}", auto_ack_s=None) as rx:
        settings = Settings(
            db=str(tmp_path / "b.db"), data_dir=str(tmp_path), http_port=port, platform_url=rx.url,
            platform_secret=SECRET, retry_base_s=0.05,
        )
        async with EmbeddedBridge(settings) as eb:
            yield eb, rx


def lambda_settings(url: str, secret: str = RELAY) -> AlexaSettings:
    return AlexaSettings(application_ids=APP, bridge_url=url, relay_secret=secret, ack_wait_s=0.5)


async def test_lambda_help_reaches_the_platform(bridge) -> None:
    eb, rx = bridge
    handler = build_lambda_handler(lambda_settings(eb.url))
    env = envelopes.current(envelopes.load("stop-intent-request.derived.json"), intent="HelpIntent")
    out = await asyncio.to_thread(handler, env, None)
    speech = out["response"]["outputSpeech"]["ssml"]
    assert "Your alert has been" in speech and "Help is on the way" not in speech
    device = unverified_device_id(env["context"]["System"]["device"]["deviceId"])
    contacts = await rx.wait_for(lambda cs: any(c["device"]["id"] == device for c in cs))
    contact = next(c for c in contacts if c["device"]["id"] == device)
    assert contact["language"] == "en-US" and contact["device"]["transport"] == "alexa"
    assert contact["attributes"]["location_source"] == "none"

    status = envelopes.current(envelopes.load("stop-intent-request.derived.json"), intent="StatusIntent")
    out = await asyncio.to_thread(handler, status, None)
    assert out["response"]["outputSpeech"]["ssml"].startswith("<speak>Your alert has been")


async def test_lambda_with_wrong_secret_does_not_claim_success(bridge) -> None:
    eb, _rx = bridge
    handler = build_lambda_handler(lambda_settings(eb.url, secret="not-the-secret"))
    env = envelopes.current(envelopes.load("stop-intent-request.derived.json"), intent="HelpIntent")
    out = await asyncio.to_thread(handler, env, None)
    speech = out["response"]["outputSpeech"]["ssml"]
    assert "could not send your alert" in speech and "911" in speech
    device = unverified_device_id(env["context"]["System"]["device"]["deviceId"])
    assert await eb.runtime.store.open_alert_for_device(device) is None


async def test_relay_rejects_unsigned_calls(bridge) -> None:
    eb, _rx = bridge
    async with httpx.AsyncClient() as client:
        resp = await client.post(f"{eb.url}/alexa/relay/raise", json={"observation": {}})
        assert resp.status_code == 401
        resp = await client.post(
            f"{eb.url}/alexa/relay/raise",
            json={"observation": {}},
            headers={TIMESTAMP_HEADER: "1", SIGNATURE_HEADER: "00"},
        )
        assert resp.status_code == 401


def test_lambda_refuses_another_skill() -> None:
    handler = build_lambda_handler(lambda_settings("http://127.0.0.1:9"))
    env = envelopes.current(envelopes.load("launch-request.json"))
    env["context"]["System"]["application"]["applicationId"] = "amzn1.ask.skill.other"
    with pytest.raises(Exception, match="Skill ID Verification failed"):
        handler(env, None)


async def test_lambda_cancel_under_the_duress_phrase_is_not_asked_about(bridge) -> None:
    """The skill asks the bridge over the relay (`innocuous`) before its confirmation question."""
    eb, rx = bridge
    handler = build_lambda_handler(lambda_settings(eb.url))
    duress = envelopes.current(envelopes.load("stop-intent-request.derived.json"), intent="DuressIntent")
    out = await asyncio.to_thread(handler, duress, None)
    assert out["response"]["outputSpeech"]["ssml"] == "<speak>OK, noted.</speak>"
    cancel = envelopes.current(envelopes.load("stop-intent-request.derived.json"), intent="CancelAlertIntent",
                               confirmation="NONE")
    out = await asyncio.to_thread(handler, cancel, None)
    assert out["response"]["outputSpeech"]["ssml"] == "<speak>You have no open alert to cancel.</speak>"
    assert not out["response"].get("directives")
    device = unverified_device_id(duress["context"]["System"]["device"]["deviceId"])
    alert = await eb.runtime.store.open_alert_for_device(device)
    assert alert is not None and alert.attributes.get("cancel_requests_under_duress")
    assert not any(c["msg_type"] == "cancel" for c in rx.contacts)
