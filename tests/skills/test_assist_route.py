"""Home Assistant Assist route (skills/assist) on a real EmbeddedBridge delivering to the reference receiver.

The request body is what the documented rest_command in docs/transports/voice.md sends from an
intent_script; the reply's `speech` is what Assist says (HA conversation API shape, Home
Assistant developer docs: intent_script and conversation response).
"""

from __future__ import annotations

import httpx
import pytest

from bridge.alerts.pipeline import DURESS_CANCEL_REASON
from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import AlertState, CivicAddress, Device, Location, Person
from simulator.platform.receiver import EmbeddedReceiver
from skills.alexa.speech import say
from skills.assist.adapter import bearer_token
from tests.support.ports import free_port

SECRET = "assist-test-secret"
TOKEN = "kitchen-satellite-token-0123456789"


@pytest.fixture
async def bridge(tmp_path):
    port = free_port()
    token = "platform-" + SECRET  # the callbacks' own credential, never the webhook secret
    async with EmbeddedReceiver(
        secret=SECRET, bridge_url=f"http://127.0.0.1:{port}", auto_ack_s=None, platform_token=token
    ) as rx:
        settings = Settings(
            db=str(tmp_path / "b.db"), data_dir=str(tmp_path), http_port=port, platform_url=rx.url,
            platform_secret=SECRET, platform_token=token, retry_base_s=0.05,
        )
        async with EmbeddedBridge(settings) as eb, httpx.AsyncClient(timeout=30) as client:
            store = eb.runtime.store
            await store.put_device(
                Device(
                    device_id="ha-kitchen",
                    person=Person(language="en-GB"),
                    registered_address=Location(
                        source="registered_address",
                        civic=CivicAddress(hno="4", a6="Mill Lane", a3="Perth", pc="PH1 1AA"),
                    ),
                )
            )
            await store.set_credential("ha-kitchen", "token", TOKEN)

            async def post(body: dict, token: str | None = TOKEN, scheme: str = "Bearer ") -> httpx.Response:
                headers = {"Authorization": f"{scheme}{token}"} if token else {}
                return await client.post(f"{eb.url}/v1/voice/assist", json=body, headers=headers)

            yield eb, rx, post


async def test_help_status_and_confirmed_cancel(bridge) -> None:
    eb, rx, post = bridge
    resp = await post({"intent": "HelpIntent", "text": "I need help", "site_id": "kitchen"})
    assert resp.status_code == 200
    body = resp.json()
    assert "Help is on the way" not in body["speech"] and "999" in body["speech"]
    contacts = await rx.wait_for(lambda cs: any(c["alert_id"] == body["alert_id"] for c in cs))
    contact = next(c for c in contacts if c["alert_id"] == body["alert_id"])
    assert contact["device"]["transport"] == "assist" and contact["kind"] == "sos"
    assert contact["language"] == "en-GB" and contact["verified"] is True
    assert contact["location"]["source"] == "registered_address"
    assert contact["attributes"]["location_source"] == "registered_address"
    assert contact["attributes"]["site_id"] == "kitchen"

    await rx.receiver.callback(body["alert_id"], "ack")
    status = (await post({"intent": "StatusIntent"})).json()
    assert status["speech"] == "Your alert has been answered. Help is on the way."
    # Issue 16: the platform's latest message is read out on the next status question.
    platform = {"Authorization": f"Bearer {rx.receiver.platform_token}"}
    for text in ("Officers are on their way.", "Please unlock the front door if you can."):
        async with httpx.AsyncClient() as c:
            r = await c.post(f"{eb.url}/v1/platform/alerts/{body['alert_id']}/messages", json={"text": text},
                             headers=platform)
            assert r.status_code == 201, r.text
    status = (await post({"intent": "StatusIntent"})).json()
    assert status["speech"] == ("Your alert has been answered. Help is on the way. "
                                "The control room says: Please unlock the front door if you can.")
    deliveries = [h.detail for h in await eb.runtime.store.history(body["alert_id"])
                  if h.event == "message_delivery"]
    assert deliveries == [{"message_id": r.json()["message_id"], "channel": "voice", "status": "sent"}]

    ask = (await post({"intent": "CancelAlertIntent"})).json()
    assert ask["speech"] == "Do you want to cancel your alert? Then say: yes, cancel my alert."
    assert (await eb.runtime.store.get_alert(body["alert_id"])).state == AlertState.acknowledged
    done = (await post({"intent": "CancelAlertIntent", "confirmed": True})).json()
    assert done["speech"] == "Your alert is cancelled."
    assert (await eb.runtime.store.get_alert(body["alert_id"])).state == AlertState.cancelled
    again = (await post({"intent": "CancelAlertIntent", "confirmed": True})).json()
    assert again["speech"] == "You have no open alert to cancel."


async def test_duress_phrase_by_text_is_silent(bridge) -> None:
    _eb, rx, post = bridge
    resp = await post({"intent": "HelpIntent", "text": "Is the kettle on?", "language": "en-GB"})
    body = resp.json()
    assert body["speech"] == "OK, noted."
    contacts = await rx.wait_for(lambda cs: any(c["alert_id"] == body["alert_id"] for c in cs))
    contact = next(c for c in contacts if c["alert_id"] == body["alert_id"])
    assert contact["silent"] is True and contact["kind"] == "duress"
    assert (await post({"intent": "StatusIntent"})).json()["speech"] == "OK, noted."
    # A message on a silent alert is never read out: the answer stays innocuous.
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{_eb.url}/v1/platform/alerts/{body['alert_id']}/messages",
                         json={"text": "Police are outside.", "audible": True},
                         headers={"Authorization": f"Bearer {rx.receiver.platform_token}"})
        assert r.status_code == 201 and r.json()["discreet"] is True
    assert (await post({"intent": "StatusIntent"})).json()["speech"] == "OK, noted."


async def test_posted_fix_and_language(bridge) -> None:
    _eb, rx, post = bridge
    fix = {"lat": 56.39, "lon": -3.43, "accuracy_m": 20}
    body = (await post({"intent": "HelpIntent", "language": "de-DE", "location": fix})).json()
    assert body["speech"].startswith("Dein Alarm wurde")
    contacts = await rx.wait_for(lambda cs: any(c["alert_id"] == body["alert_id"] for c in cs))
    contact = next(c for c in contacts if c["alert_id"] == body["alert_id"])
    assert contact["language"] == "de-DE"
    assert (contact["location"]["lat"], contact["location"]["lon"]) == (56.39, -3.43)
    assert contact["attributes"]["location_source"] == "assist_fix"


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_bad_token_is_refused_and_raises_nothing(bridge, token: str | None) -> None:
    eb, _rx, post = bridge
    resp = await post({"intent": "HelpIntent"}, token=token)
    assert resp.status_code == 401
    assert await eb.runtime.store.open_alert_for_device("ha-kitchen") is None
    reason = "unauthenticated" if token is None else "bad_credentials"
    assert eb.runtime.metrics.registry.get_sample_value(
        "sosbridge_alerts_rejected_total", {"transport": "assist", "reason": reason}
    ) == 1.0


async def test_assist_shares_the_failed_credential_limit_and_audit(bridge) -> None:
    """Issue 14 item 10: the voice route skipped the limiter and the audit that guard the wearable API."""
    eb, _rx, post = bridge
    codes = [(await post({"intent": "HelpIntent"}, token=f"guess-{i:02d}-0123456789")).status_code for i in range(40)]
    assert codes[0] == 401 and codes[-1] == 429  # past the per-source burst: 429 with Retry-After
    counted = {reason: eb.runtime.metrics.registry.get_sample_value(
        "sosbridge_alerts_rejected_total", {"transport": "assist", "reason": reason}) or 0
        for reason in ("bad_credentials", "auth_rate_limited")}
    # Each refusal counted once, under the answer it got.
    assert counted == {"bad_credentials": codes.count(401), "auth_rate_limited": codes.count(429)}
    rows = await eb.runtime.store._run(lambda c: c.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
    assert 1 <= rows <= 3  # one row per source and interval, not one per refusal


async def test_invalid_intent_is_422(bridge) -> None:
    eb, _rx, post = bridge
    resp = await post({"intent": "OrderPizza"})
    assert resp.status_code == 422
    assert await eb.runtime.store.open_alert_for_device("ha-kitchen") is None


def test_bearer_token_forms() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("abc") == "abc"  # secrets.yaml without "Bearer ": still the token
    assert bearer_token("Basic dXNlcjpwYXNz") == ""
    assert bearer_token("") == ""


async def test_token_without_bearer_prefix_is_accepted(bridge) -> None:
    """Issue 17: a secrets.yaml entry holding only the token gave an empty reply and no alert."""
    _eb, rx, post = bridge
    resp = await post({"intent": "HelpIntent", "language": "en-GB"}, scheme="")
    assert resp.status_code == 200
    body = resp.json()
    await rx.wait_for(lambda cs: any(c["alert_id"] == body["alert_id"] for c in cs))


async def test_duress_then_cancel_is_held_over_http(bridge) -> None:
    """The voice route's cancel while the duress alert is open: no stand-down, an update, still open."""
    eb, rx, post = bridge
    duress = (await post({"intent": "DuressIntent", "language": "en-GB"})).json()
    assert duress["speech"] == "OK, noted."
    await rx.wait_for(lambda cs: any(c["alert_id"] == duress["alert_id"] for c in cs))
    done = (await post({"intent": "CancelAlertIntent", "confirmed": True})).json()
    assert done["speech"] == say("nothing_to_cancel", "en-GB")
    contacts = await rx.wait_for(
        lambda cs: any(c["msg_type"] == "update" and DURESS_CANCEL_REASON in (c["reason"] or "") for c in cs)
    )
    assert not any(c["msg_type"] == "cancel" for c in contacts)
    alert = await eb.runtime.store.get_alert(duress["alert_id"])
    assert alert.is_open and alert.state != AlertState.cancelled
    assert alert.attributes["cancel_requests_under_duress"] == 1
    assert (await post({"intent": "StatusIntent"})).json()["speech"] == say("no_alert", "en-GB")
    # The platform can still stand it down.
    await rx.receiver.callback(duress["alert_id"], "resolve")
    assert (await eb.runtime.store.get_alert(duress["alert_id"])).state == AlertState.resolved


async def test_duress_stays_innocuous_when_the_bridge_cannot_store(bridge) -> None:
    """A store failure on the duress path answers 503 (the automation retries) with the innocuous reply."""
    eb, _rx, post = bridge
    store = eb.runtime.store
    await store._run(lambda c: c.execute("PRAGMA query_only=1"))  # a real write failure in SQLite
    duress = await post({"intent": "DuressIntent"})
    assert duress.status_code == 503 and duress.json()["speech"] == "OK, noted."
    help_ = await post({"intent": "HelpIntent"})
    assert help_.status_code == 503 and "999" in help_.json()["speech"]
    await store._run(lambda c: c.execute("PRAGMA query_only=0"))
