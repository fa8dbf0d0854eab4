"""Fuzz every API body: the bridge answers 2xx/4xx (or an intentional 503), never a crash, and keeps serving.

Routes: POST /v1/alerts, /v1/alerts/{id}/location, /v1/alerts/{id}/cancel, /v1/platform/alerts/{id}/ack,
/v1/devices, /v1/voice/assist and /alexa. Bodies are the route's own shape with hostile values (huge
numbers, NaN, wrong types, long strings), valid JSON of the wrong shape, deep nesting, random bytes and
oversized bodies, under random content types. The bulk runs through FastAPI's TestClient on the real
runtime app (real SQLite store, real adapters, real lifespan) for speed; TestClient re-raises any
unhandled server exception, so a crash fails the test even where it would otherwise become a 500.
A last test sends the nastiest bodies to a real EmbeddedBridge over loopback HTTP.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.app.api.app import create_app
from bridge.app.config import Settings
from bridge.app.runtime import BridgeRuntime

ALEXA_APP_ID = "amzn1.ask.skill.00000000-0000-0000-0000-00000000fuzz"

FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    database=None,
)

HUGE = [10**400, 2**63, -(2**63) - 1, 1e308, -1e308, 5e-324, 10**30]
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=60),
    st.sampled_from(["", "sos", "duress", "NaN", "2026-13-45T99:99:99Z", "x" * 300, "\u0000", "en-GB"]),
)
json_values = st.recursive(
    leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=20
)


def fields(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """The route's own field names with hostile values: reaches validators, not just the JSON parser."""
    return st.dictionaries(st.sampled_from(names), json_values, max_size=len(names))


def dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def bodies(names: list[str], valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    location = st.fixed_dictionaries(
        {"lat": json_values, "lon": json_values}, optional={"accuracy_m": json_values, "fix_time": json_values}
    )
    return st.one_of(
        fields(names).map(dump),
        st.builds(lambda v, loc: dump({**valid, "location": loc} | v), fields(names), location),
        json_values.map(dump),
        st.binary(max_size=300),
        st.sampled_from([20, 1000, 5000]).map(lambda n: b"[" * n + b"]" * n),
        st.sampled_from([b'{"a":' * 3000 + b"1" + b"}" * 3000, b"1" * 5000, b'{"kind": NaN}', b"", b"null"]),
        st.just(b'{"kind":"sos","attributes":{"x":"' + b"y" * 20000 + b'"}}'),  # over max_body_bytes
    )


content_types = st.sampled_from(
    ["application/json", "application/json; charset=latin-1", "text/plain", "multipart/form-data; boundary=x", ""]
)


@dataclass
class Api:
    client: TestClient
    runtime: BridgeRuntime
    device_token: str
    admin_token: str
    platform_token: str
    alert_id: str

    def post(self, path: str, body: bytes, content_type: str, token: str | None) -> httpx.Response:
        headers = {"content-type": content_type} if content_type else {}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return self.client.post(path, content=body, headers=headers)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-api")
    admin, platform = secrets.token_hex(16), secrets.token_hex(16)
    with pytest.MonkeyPatch.context() as mp:
        # Alexa on, with nothing to fetch: every request must fail verification with a 400, never a 5xx.
        mp.setenv("SOSBRIDGE_ALEXA_APPLICATION_IDS", ALEXA_APP_ID)
        mp.setenv("SOSBRIDGE_ALEXA_CERT_FETCH", "false")
        mp.setenv("SOSBRIDGE_ALEXA_CERT_CACHE_DIR", str(tmp / "alexa-certs"))
        # No platform answers here; a voice help request must not wait for an acknowledgement that never comes.
        mp.setenv("SOSBRIDGE_ASSIST_ACK_WAIT_S", "0")
        runtime = BridgeRuntime(
            Settings(
                db=str(tmp / "bridge.db"),
                data_dir=str(tmp),
                http_port=8080,
                admin_token=admin,
                platform_token=platform,
            )
        )
    assert {"http", "assist", "alexa"} <= {a.name for a in runtime.adapters}
    with TestClient(create_app(runtime)) as client:
        resp = client.post(
            "/v1/devices",
            json={"device_id": "fuzz-1", "person": {"name": "Fuzz Person", "language": "en-GB"}},
            headers={"authorization": f"Bearer {admin}"},
        )
        assert resp.status_code == 201, resp.text
        token = resp.json()["token"]
        resp = client.post("/v1/alerts", json={"kind": "sos"}, headers={"authorization": f"Bearer {token}"})
        assert resp.status_code == 202, resp.text
        yield Api(client, runtime, token, admin, platform, resp.json()["alert_id"])


def assert_no_crash(resp: httpx.Response) -> None:
    assert resp.status_code < 500 or resp.status_code == 503, (resp.status_code, resp.text[:300])


alert_ids = st.one_of(st.just("__real__"), st.text(min_size=1, max_size=40), st.sampled_from(["..", "%00", "a" * 500]))


def path_for(api: Api, template: str, alert_id: str) -> str:
    real = api.alert_id if alert_id == "__real__" else quote(alert_id, safe="")
    return template.format(id=real)


ALERT_FIELDS = ["kind", "silent", "severity", "location", "occurred_at", "message_id", "language", "attributes"]


@FUZZ_SETTINGS
@given(body=bodies(ALERT_FIELDS, {"kind": "sos"}), ctype=content_types)
def test_post_alert(api: Api, body: bytes, ctype: str) -> None:
    assert_no_crash(api.post("/v1/alerts", body, ctype, api.device_token))


@FUZZ_SETTINGS
@given(body=bodies(["location", "message_id"], {}), ctype=content_types, alert_id=alert_ids)
def test_post_location(api: Api, body: bytes, ctype: str, alert_id: str) -> None:
    assert_no_crash(api.post(path_for(api, "/v1/alerts/{id}/location", alert_id), body, ctype, api.device_token))


@FUZZ_SETTINGS
@given(body=bodies(["reason", "message_id"], {"reason": "im_ok"}), ctype=content_types, alert_id=alert_ids)
def test_post_cancel(api: Api, body: bytes, ctype: str, alert_id: str) -> None:
    assert_no_crash(api.post(path_for(api, "/v1/alerts/{id}/cancel", alert_id), body, ctype, api.device_token))


@FUZZ_SETTINGS
@given(
    body=bodies(["note", "operator"], {"note": "on it"}),
    ctype=content_types,
    alert_id=alert_ids,
    authed=st.booleans(),
)
def test_post_platform_ack(api: Api, body: bytes, ctype: str, alert_id: str, authed: bool) -> None:
    token = api.platform_token if authed else "wrong"
    assert_no_crash(api.post(path_for(api, "/v1/platform/alerts/{id}/ack", alert_id), body, ctype, token))


DEVICE_FIELDS = [
    "device_id", "tenant_id", "profile_id", "label", "person", "registered_address", "identifiers", "status",
    "check_in_interval_s", "gateway_id", "last_location", "last_seen", "token",
]  # fmt: skip


@FUZZ_SETTINGS
@given(body=bodies(DEVICE_FIELDS, {"device_id": "fuzz-new"}), ctype=content_types)
def test_post_devices(api: Api, body: bytes, ctype: str) -> None:
    assert_no_crash(api.post("/v1/devices", body, ctype, api.admin_token))


ASSIST_FIELDS = ["intent", "text", "language", "confirmed", "site_id", "conversation_id", "location"]


@FUZZ_SETTINGS
@given(body=bodies(ASSIST_FIELDS, {"intent": "StatusIntent"}), ctype=content_types)
def test_post_voice_assist(api: Api, body: bytes, ctype: str) -> None:
    assert_no_crash(api.post("/v1/voice/assist", body, ctype, api.device_token))


@FUZZ_SETTINGS
@given(
    body=bodies(["version", "session", "context", "request"], {"version": "1.0"}),
    cert_url=st.one_of(st.none(), st.text(max_size=80), st.just("https://s3.amazonaws.com/echo.api/echo-api-cert.pem")),
    signature=st.one_of(st.none(), st.text(max_size=80), st.binary(max_size=64).map(lambda b: b.hex())),
)
def test_post_alexa(api: Api, body: bytes, cert_url: str | None, signature: str | None) -> None:
    headers = {"content-type": "application/json"}
    if cert_url is not None:
        headers["SignatureCertChainUrl"] = cert_url.encode("ascii", "ignore").decode()
    if signature is not None:
        headers["Signature-256"] = signature.encode("ascii", "ignore").decode()
    resp = api.client.post("/alexa", content=body, headers=headers)
    assert_no_crash(resp)
    assert resp.status_code in (400, 413)  # nothing unsigned gets past verification


def test_still_serving_after_fuzzing(api: Api) -> None:
    """Runs last in this module: the bridge still takes a genuine alert and answers health checks."""
    assert api.client.get("/healthz").status_code == 200
    resp = api.client.post(
        "/v1/alerts",
        json={"kind": "fall", "message_id": "after-fuzz", "location": {"lat": 55.8642, "lon": -4.2518}},
        headers={"authorization": f"Bearer {api.device_token}"},
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["outcome"] in ("created", "escalated")


NASTY = [
    b"[" * 10000,
    b'{"kind":' * 2000 + b'"sos"' + b"}" * 2000,
    b'{"kind": "sos", "location": {"lat": NaN, "lon": Infinity}}',
    b'{"kind": "sos", "location": {"lat": 1e999, "lon": 0}}',
    b'{"kind": "sos", "occurred_at": "' + b"9" * 4000 + b'"}',
    b'{"kind": "sos", "attributes": {"n": ' + b"9" * 5000 + b"}}",  # past Python's int-parsing digit limit
    b"\xff\xfe\x00{",
]


async def test_real_bridge_over_http_survives_nasty_bodies(bridge_env: Any) -> None:
    token = await bridge_env.add_device("fuzz-http")
    async with httpx.AsyncClient(base_url=bridge_env.url, timeout=10) as client:
        auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        for body in NASTY:
            resp = await client.post("/v1/alerts", content=body, headers=auth)
            assert_no_crash(resp)
            assert 400 <= resp.status_code < 500, (body[:40], resp.status_code)
        assert (await client.get("/healthz")).status_code == 200
        resp = await client.post("/v1/alerts", json={"kind": "sos"}, headers={"authorization": f"Bearer {token}"})
        assert resp.status_code == 202
