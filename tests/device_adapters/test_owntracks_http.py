"""OwnTracks HTTP mode against the embedded bridge over real HTTP: Basic auth with the device's token,
X-Limit-U/X-Limit-D (or ?u=&d=), the JSON array answer, the SOS trigger, refusals, a store outage.

Payloads: owntracks/booklet docs/guide/quicksetup.md (location) and docs/tech/lua.md (manual publish).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest

from bridge.core.model import Device, Person
from tests.device_adapters.test_watch import store_outage
from tests.support.bridges import BridgeEnv, running_bridge

LOCATION = ('{"_type":"location","SSID":"mywifi","alt":154,"batt":53,"conn":"w","created_at":1706856299,'
            '"lat":48.856826,"lon":2.292713,"tid":"j1","tst":1706856298,"vel":0}')
MANUAL = '{"batt":-1,"lon":2.29513,"lat":48.85833,"t":"u","tst":1441984413,"_type":"location","tid":"JJ"}'
TOKEN = "jane-phone-token-0123456789"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_bridge(tmp_path) as env:
        await env.add_device("phone-jane", token=TOKEN, profile_id="owntracks-phone-http",
                             identifiers={"owntracks": "jane/nokia"}, person=Person(name="Jane", language="fr"))
        yield env


async def post(env: BridgeEnv, body: str, headers: dict[str, str], query: str = "") -> httpx.Response:
    async with httpx.AsyncClient(base_url=env.url) as client:
        return await client.post(f"/v1/owntracks{query}", content=body.encode(),
                                 headers={"Content-Type": "application/json", **headers})


async def test_location_then_manual_publish_raises_sos(env: BridgeEnv) -> None:
    headers = {**basic("jane", TOKEN), "X-Limit-U": "jane", "X-Limit-D": "nokia"}
    answer = await post(env, LOCATION, headers)
    assert (answer.status_code, answer.json()) == (200, [])  # the JSON array OwnTracks expects
    device = await env.store.get_device("phone-jane")
    assert device is not None and device.last_location is not None and device.last_location.lat == 48.856826
    answer = await post(env, MANUAL, basic("jane", TOKEN), query="?u=jane&d=nokia")  # Recorder-style query
    assert (answer.status_code, answer.json()) == (200, [])
    contact = await env.receiver.first(lambda c: c["device"]["id"] == "phone-jane")
    assert contact["kind"] == "sos" and contact["location"]["lat"] == pytest.approx(48.85833)
    assert contact["language"] == "fr"
    empty = await post(env, "", headers)  # a friend deleted in the app: zero-length body, ignored
    assert (empty.status_code, empty.json()) == (200, [])


async def test_refusals_are_counted(env: BridgeEnv) -> None:
    metrics = env.bridge.runtime.metrics
    none = await post(env, MANUAL, {})
    assert none.status_code == 401 and "Basic" in none.headers["www-authenticate"]
    wrong = await post(env, MANUAL, basic("jane", "not-the-token-at-all"))
    assert wrong.status_code == 401
    other = await post(env, MANUAL, {**basic("jane", TOKEN), "X-Limit-U": "mallory", "X-Limit-D": "nokia"})
    assert other.status_code == 403
    encrypted = await post(env, '{"_type":"encrypted","data":"bm90"}', basic("jane", TOKEN))
    assert (encrypted.status_code, encrypted.json()) == (400, [])
    assert metrics.rejected_count("http", "unauthenticated") == 1
    assert metrics.rejected_count("http", "bad_credentials") == 1
    assert metrics.rejected_count("http", "identity_mismatch") == 1
    assert not env.receiver.contacts


async def test_store_outage_is_retried_inside_the_request(env: BridgeEnv) -> None:
    # OwnTracks counts any answer, even 503, as delivered: the bridge keeps trying while the store is down.
    task = asyncio.create_task(post(env, MANUAL, basic("jane", TOKEN)))
    with store_outage(env.store):
        await asyncio.sleep(0.5)
        assert not task.done()  # still trying: no answer yet
    answer = await task
    assert (answer.status_code, answer.json()) == (200, [])
    await env.receiver.first(lambda c: c["device"]["id"] == "phone-jane" and c["kind"] == "sos")
    with store_outage(env.store):  # down for longer than the retries: 503, nothing stored
        answer = await post(env, MANUAL.replace("1441984413", "1441984999"), basic("jane", TOKEN))
    assert answer.status_code == 503


def test_a_device_with_another_profile_cannot_post_here() -> None:
    # The HTTP wearable profile speaks /v1/alerts only: its match keeps it off this route (wrong_topic).
    from bridge.devices.profiles import ProfileRegistry, matches_frame

    wearable = ProfileRegistry.load().get("sosbridge-http-wearable")
    assert wearable is not None
    assert not matches_frame(wearable, {"ecosystem": "owntracks", "path": "/v1/owntracks", "subtopic": ""})
    assert Device(device_id="x").profile_id is None
