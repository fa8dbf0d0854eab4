"""The wearable API over real HTTP on loopback, with a real receiver: happy path and a table of bad input."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bridge.alerts.pipeline import DURESS_CANCEL_REASON
from bridge.delivery.sinks.signing import sign
from tests.support.bridges import BridgeEnv


async def wait_state(client: httpx.AsyncClient, alert_id: str, state: str, timeout: float = 5.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    body: dict = {}
    while asyncio.get_running_loop().time() < deadline:
        body = (await client.get(f"/v1/alerts/{alert_id}")).json()
        if body.get("state") == state:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"alert stayed {body.get('state')}, wanted {state}")


async def test_alert_to_contact_and_back(bridge_env: BridgeEnv) -> None:
    token = await bridge_env.add_device("watch-1")
    # A plausible device time (within the profile's max_fix_age_s) is kept as the alert's time
    # (docs/devices/fix-age.md); whole seconds, as a watch reports it.
    occurred = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S")
    async with httpx.AsyncClient(base_url=bridge_env.url, headers={"Authorization": f"Bearer {token}"}) as c:
        r = await c.post(
            "/v1/alerts",
            json={
                "kind": "fall",
                "silent": True,
                "message_id": "m-1",
                "occurred_at": f"{occurred}Z",
                "language": "pl",
                "location": {"lat": 56.7969, "lon": -5.0036, "accuracy_m": 7.5},
            },
        )
        assert r.status_code == 202, r.text
        alert_id = r.json()["alert_id"]
        contacts = await bridge_env.receiver.wait_for(lambda cs: len(cs) >= 1)
        contact = contacts[0]
        assert (contact["alert_id"], contact["kind"], contact["silent"], contact["language"]) == (
            alert_id,
            "fall",
            True,
            "pl",
        )
        assert contact["occurred_at"].startswith(occurred)
        assert contact["location"]["accuracy_m"] == 7.5 and contact["location"]["grid_ref"].startswith("NN 16")
        assert contact["device"] == {"id": "watch-1", "profile": None, "transport": "http", "auth": "token",
                                     "label": None}
        body = await wait_state(c, alert_id, "acknowledged")
        assert body["message"] == "Help is on the way."
        # The device missed that first answer and retries the same press: a duplicate, stored once, and
        # the answer still tells it where its alert stands.
        retried = await c.post("/v1/alerts", json={"kind": "fall", "silent": True, "message_id": "m-1",
                                                   "occurred_at": f"{occurred}Z", "language": "pl",
                                                   "location": {"lat": 56.7969, "lon": -5.0036, "accuracy_m": 7.5}})
        assert retried.status_code == 202, retried.text
        assert retried.json() == {"alert_id": alert_id, "outcome": "duplicate", "state": "acknowledged",
                                  "message": "Help is on the way."}

        r = await c.post(
            f"/v1/alerts/{alert_id}/location", json={"location": {"lat": 56.8, "lon": -5.0, "accuracy_m": 5}}
        )
        assert r.status_code == 202 and r.json()["outcome"] == "updated"
        r = await c.post(f"/v1/alerts/{alert_id}/cancel", json={"reason": "im_ok"})
        assert r.status_code == 202 and r.json()["state"] in (None, "cancelled")  # as any retried cancel
        contacts = await bridge_env.receiver.wait_for(lambda cs: len(cs) >= 3)
        assert [x["msg_type"] for x in contacts] == ["alert", "update", "cancel"]
        assert contacts[2]["references"] == [f"{alert_id}:1", f"{alert_id}:2"]
    # Every contact the receiver stored came with a valid signature and its idempotency key.
    records = bridge_env.receiver.receiver.records
    assert [r["idempotency_key"] for r in records] == [f"{alert_id}:{i}" for i in (1, 2, 3)]


async def test_resolve_from_platform(bridge_env: BridgeEnv) -> None:
    token = await bridge_env.add_device("watch-2")
    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        r = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"})
        alert_id = r.json()["alert_id"]
        bad = await c.post(f"/v1/platform/alerts/{alert_id}/resolve", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        ok = await c.post(
            f"/v1/platform/alerts/{alert_id}/resolve",
            headers={"Authorization": f"Bearer {bridge_env.platform_token}"},
            json={"note": "officers attended"},
        )
        assert ok.status_code == 200 and ok.json()["state"] == "resolved"
        status = await c.get(f"/v1/alerts/{alert_id}", headers={"Authorization": f"Bearer {token}"})
        assert status.json()["state"] == "resolved"


BAD_REQUESTS = [
    # (name, method, path, headers, body, status, reason fragment)
    ("no token", "POST", "/v1/alerts", {}, {"kind": "sos"}, 401, "token"),
    ("wrong token", "POST", "/v1/alerts", {"Authorization": "Bearer wrong"}, {"kind": "sos"}, 401, "not valid"),
    ("basic auth", "POST", "/v1/alerts", {"Authorization": "Basic Zm9vOmJhcg=="}, {"kind": "sos"}, 401, "token"),
    ("unknown kind", "POST", "/v1/alerts", "dev", {"kind": "alien"}, 422, "kind"),
    ("missing kind", "POST", "/v1/alerts", "dev", {"silent": True}, 422, "kind"),
    (
        "latitude out of range",
        "POST",
        "/v1/alerts",
        "dev",
        {"kind": "sos", "location": {"lat": 91, "lon": 0}},
        422,
        "lat",
    ),
    (
        "negative accuracy",
        "POST",
        "/v1/alerts",
        "dev",
        {"kind": "sos", "location": {"lat": 55, "lon": -3, "accuracy_m": -1}},
        422,
        "accuracy_m",
    ),
    ("unknown field", "POST", "/v1/alerts", "dev", {"kind": "sos", "colour": "red"}, 422, "colour"),
    ("wrong type", "POST", "/v1/alerts", "dev", {"kind": "sos", "silent": "perhaps"}, 422, "silent"),
    ("not json", "POST", "/v1/alerts", "dev", b"{kind: sos", 422, ""),
    ("json array", "POST", "/v1/alerts", "dev", [1, 2, 3], 422, ""),
    ("bad timestamp", "POST", "/v1/alerts", "dev", {"kind": "sos", "occurred_at": "yesterday"}, 422, "occurred_at"),
    ("huge message id", "POST", "/v1/alerts", "dev", {"kind": "sos", "message_id": "x" * 500}, 422, "message_id"),
    ("bad language tag", "POST", "/v1/alerts", "dev", {"kind": "sos", "language": "<script>"}, 422, "language"),
    ("oversized body", "POST", "/v1/alerts", "dev", {"kind": "sos", "attributes": {"a": "x" * 40000}}, 413, "exceeds"),
    ("other device's alert", "GET", "/v1/alerts/{other}", "dev", None, 404, "not found"),
    ("cancel other device's alert", "POST", "/v1/alerts/{other}/cancel", "dev", {}, 404, "not found"),
    ("unknown alert", "GET", "/v1/alerts/01ARZ3NDEKTSV4RRFFQ69G5FAV", "dev", None, 404, "not found"),
    ("platform ack without credential", "POST", "/v1/platform/alerts/{other}/ack", {}, {}, 401, "platform"),
    ("devices without admin", "GET", "/v1/devices", {}, None, 401, "admin"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "headers", "body", "status", "fragment"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS]
)
async def test_bad_input(
    bridge_env: BridgeEnv, name: str, method: str, path: str, headers: object, body: object, status: int, fragment: str
) -> None:
    token = await bridge_env.add_device("dev")
    other_token = await bridge_env.add_device("other-dev")
    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        other = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {other_token}"})
        hdrs = {"Authorization": f"Bearer {token}"} if headers == "dev" else dict(headers)  # type: ignore[call-overload]
        content = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        if content is not None:
            hdrs["Content-Type"] = "application/json"
        r = await c.request(method, path.format(other=other.json()["alert_id"]), content=content, headers=hdrs)
        assert r.status_code == status, r.text
        reply = r.json()
        assert reply.get("error") and fragment.lower() in reply.get("reason", "").lower()
        # ...and the bridge keeps serving.
        ok = await c.post("/v1/alerts", json={"kind": "panic"}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 202
        metrics = (await c.get("/metrics")).text
    if status in (401, 413, 422) and "platform" not in name and "admin" not in name:
        assert "sosbridge_alerts_rejected_total{" in metrics


async def test_metrics_and_readiness(bridge_env: BridgeEnv) -> None:
    token = await bridge_env.add_device("m1")
    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"})
        await bridge_env.receiver.wait_for(lambda cs: len(cs) == 1)
        await asyncio.sleep(0.1)
        text = (await c.get("/metrics")).text
        assert 'sosbridge_alerts_accepted_total{kind="sos",outcome="created",transport="http"} 1.0' in text
        assert 'sosbridge_deliveries_total{outcome="delivered",sink="platform"} 1.0' in text
        assert "sosbridge_end_to_end_seconds_count 1.0" in text
        assert (await c.get("/readyz")).json()["status"] == "ready"
        assert (await c.get("/healthz")).status_code == 200


async def test_receiver_refuses_bad_signature(bridge_env: BridgeEnv) -> None:
    body = b'{"schema":"sosbridge.contact/1"}'
    async with httpx.AsyncClient() as c:
        bad = await c.post(
            bridge_env.receiver.url, content=body, headers={"X-SOSBridge-Signature": sign(body, "wrong")}
        )
        assert bad.status_code == 401
        assert bridge_env.receiver.contacts == []


async def test_admin_device_api(bridge_env: BridgeEnv) -> None:
    admin = {"Authorization": f"Bearer {bridge_env.settings.admin_token}"}
    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        r = await c.post("/v1/devices", headers=admin, json={"device_id": "new-1", "person": {"language": "gd"}})
        assert r.status_code == 201
        token = r.json()["token"]
        assert any(d["device_id"] == "new-1" for d in (await c.get("/v1/devices", headers=admin)).json())
        alert = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"})
        assert alert.status_code == 202
        assert (await c.delete("/v1/devices/new-1", headers=admin)).status_code == 200
        gone = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"})
        assert gone.status_code == 401


async def test_failed_credentials_are_rate_limited_per_source(bridge_env: BridgeEnv) -> None:
    token = await bridge_env.add_device("good")
    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        statuses = [
            (
                await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer guess-{i}"})
            ).status_code
            for i in range(25)
        ]
        assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
        # A device with a valid token is never locked out by someone else's guessing.
        ok = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 202
    # Audited as one summary row per source per interval (SOSBRIDGE_AUTH_AUDIT_INTERVAL_S), not a row each;
    # tests/security/ checks the summary row that follows.
    rows = await bridge_env.store._run(lambda conn: conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
    assert rows == 1


async def test_a_device_may_only_send_the_kinds_its_profile_declares(bridge_env: BridgeEnv) -> None:
    # A wearable's profile declares the alert kinds but never check_in_missed (the bridge raises that one).
    token = await bridge_env.add_device("watch-k", profile_id="sosbridge-http-wearable")
    async with httpx.AsyncClient(base_url=bridge_env.url, headers={"Authorization": f"Bearer {token}"}) as c:
        refused = await c.post("/v1/alerts", json={"kind": "check_in_missed"})
        assert refused.status_code == 422 and refused.json()["error"] == "undeclared_kind"
        assert "not one this device may send" in refused.json()["reason"]
        assert (await c.post("/v1/alerts", json={"kind": "fall"})).status_code == 202
        metrics = (await c.get("/metrics")).text
    assert 'sosbridge_alerts_rejected_total{reason="undeclared_kind",transport="http"} 1.0' in metrics


async def test_a_device_whose_profile_speaks_another_transport_is_refused(bridge_env: BridgeEnv) -> None:
    # A zigbee2mqtt SOS button has no HTTP client: a token that claims to be it is bound to the wrong transport.
    token = await bridge_env.add_device("z2m-btn", profile_id="zigbee2mqtt-tuya-ts0215a-sos")
    async with httpx.AsyncClient(base_url=bridge_env.url, headers={"Authorization": f"Bearer {token}"}) as c:
        refused = await c.post("/v1/alerts", json={"kind": "sos"})
        assert refused.status_code == 422 and refused.json()["error"] == "wrong_transport"
        assert "zigbee2mqtt-tuya-ts0215a-sos" in refused.json()["reason"]
        metrics = (await c.get("/metrics")).text
    assert 'sosbridge_alerts_rejected_total{reason="wrong_transport",transport="http"} 1.0' in metrics


@pytest.mark.parametrize("kind", ["duress", "panic"])
async def test_device_cancel_during_a_duress_or_silent_panic_alert_is_held(bridge_env: BridgeEnv, kind: str) -> None:
    """Issue 17: the device is answered as if the cancel worked, the platform gets an update, the alert
    stays open; only the platform stands it down."""
    token = await bridge_env.add_device(f"pendant-{kind}")
    async with httpx.AsyncClient(base_url=bridge_env.url, headers={"Authorization": f"Bearer {token}"}) as c:
        r = await c.post("/v1/alerts", json={"kind": kind, "silent": True, "message_id": "d-1"})
        assert r.status_code == 202, r.text
        alert_id = r.json()["alert_id"]
        await bridge_env.receiver.wait_for(lambda cs: any(x["alert_id"] == alert_id for x in cs))
        r = await c.post(f"/v1/alerts/{alert_id}/cancel", json={"reason": "false_alarm", "message_id": "d-2"})
        assert r.status_code == 202 and r.json()["state"] == "cancelled" and r.json()["outcome"] == "cancelled"
        contacts = await bridge_env.receiver.wait_for(
            lambda cs: any(x["alert_id"] == alert_id and x["msg_type"] == "update" for x in cs)
        )
        update = next(x for x in contacts if x["alert_id"] == alert_id and x["msg_type"] == "update")
        assert DURESS_CANCEL_REASON in update["reason"] and update["device"]["transport"] == "http"
        assert not any(x["msg_type"] == "cancel" for x in contacts)
        alert = await bridge_env.store.get_alert(alert_id)
        assert alert.is_open and alert.attributes["cancel_requests_under_duress"] == 1
        # The device keeps seeing what a cancel looks like, even after the platform acknowledged.
        await bridge_env.receiver.receiver.callback(alert_id, "ack")
        assert (await bridge_env.store.get_alert(alert_id)).state.value == "acknowledged"
        status = (await c.get(f"/v1/alerts/{alert_id}")).json()
        assert status["state"] == "cancelled" and status["message"] == "Alert cancelled."
        # A retried cancel (same message id) is a duplicate, and still reads as cancelled.
        r = await c.post(f"/v1/alerts/{alert_id}/cancel", json={"reason": "false_alarm", "message_id": "d-2"})
        assert r.status_code == 202 and r.json()["state"] in (None, "cancelled")  # as any retried cancel
        assert (await bridge_env.store.get_alert(alert_id)).attributes["cancel_requests_under_duress"] == 1
