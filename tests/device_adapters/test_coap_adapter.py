"""CoAP end to end: a virtual device (aiocoap client) → CoAP adapter → pipeline → reference receiver."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
import httpx
import pytest
from aiocoap import Code
from aiocoap.numbers import ContentFormat

from bridge.alerts.pipeline import DURESS_CANCEL_REASON
from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device, Person
from device_adapters.coap.auth import AuthError, compute_mac, parse_query, verify
from simulator.devices.coap import VirtualCoapDevice
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import running_bridge
from tests.support.ports import free_port

EDINBURGH = {"lat": 55.9533, "lon": -3.1883, "accuracy_m": 15.0}


@dataclass
class CoapEnv:
    bridge: EmbeddedBridge
    rx: EmbeddedReceiver
    device: VirtualCoapDevice

    def rejected(self, reason: str) -> float:
        return self.bridge.runtime.metrics.rejected_count("coap", reason)

    async def contact(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        return await self.rx.first(pred, timeout)


@pytest.fixture
async def coap_env(tmp_path: Path) -> AsyncIterator[CoapEnv]:
    port = free_port()
    async with running_bridge(tmp_path, auto_ack_s=0.2, coap_enabled=True, coap_port=port) as env:
        key = secrets.token_hex(32)
        await env.store.put_device(
            Device(device_id="pendant-1", profile_id="sosbridge-coap-device", person=Person(name="A"))
        )
        await env.store.set_credential("pendant-1", "coap_hmac", key, hashed=False)
        device = VirtualCoapDevice("127.0.0.1", port, "pendant-1", key)
        try:
            yield CoapEnv(env.bridge, env.receiver, device)
        finally:
            await device.close()


def test_signature_rules() -> None:
    key = "00" * 32
    mac = compute_mac(key, "POST", "alert", "d1", 1000, 5, b"\xa0")
    signed = parse_query(["d=d1", "t=1000", "c=5", f"m={mac}"])
    verify(signed, key, "POST", "alert", b"\xa0", now=1010, window_s=300)
    with pytest.raises(AuthError):
        verify(signed, key, "POST", "alert", b"\xa1", now=1010, window_s=300)  # payload changed
    with pytest.raises(AuthError):
        verify(signed, key, "GET", "alert", b"\xa0", now=1010, window_s=300)  # method changed
    with pytest.raises(AuthError):
        verify(signed, key, "POST", "alert", b"\xa0", now=2000, window_s=300)  # stale
    with pytest.raises(AuthError):
        parse_query(["d=d1", "t=x", "c=5", "m=00"])


async def test_cbor_alert_reaches_the_receiver_and_replay_is_refused(coap_env: CoapEnv) -> None:
    env = coap_env
    reply = await env.device.alert("fall", message_id="c-1", location=EDINBURGH)
    assert reply.code == Code.CREATED
    alert_id = reply.body["alert_id"]
    assert reply.location_path == ("alert", alert_id)
    alert = await env.bridge.runtime.store.get_alert(alert_id)
    assert alert is not None and alert.transport == "coap"  # 2.01 came after the alert was stored

    contact = await env.contact(lambda c: c["alert_id"] == alert_id)
    assert contact["kind"] == "fall" and contact["device"]["id"] == "pendant-1"
    assert contact["location"]["lat"] == pytest.approx(55.9533) and contact["location"]["accuracy_m"] == 15.0

    before = env.rejected("replay")
    replayed = await env.device.replay(env.device.sent[-1])
    assert replayed.code == Code.UNAUTHORIZED and b"replay" in replayed.payload
    assert env.rejected("replay") == before + 1
    assert await env.bridge.runtime.store.get_credential("pendant-1", "coap_counter") == str(env.device.counter)
    # The next properly signed request still works (and escalates the open alert).
    again = await env.device.alert("fall", message_id="c-2", use_json=True)
    assert again.code == Code.CREATED and again.body["outcome"] == "escalated"


async def test_errors_bad_payload_credentials_and_size(coap_env: CoapEnv) -> None:
    env = coap_env
    d = env.device
    bad_cbor = await d.send(d.build(Code.POST, "alert", b"\xff\x00garbage", ContentFormat.CBOR))
    assert bad_cbor.code == Code.BAD_REQUEST and b"CBOR" in bad_cbor.payload
    bad_json = await d.send(d.build(Code.POST, "alert", b'{"kind": "sos",', ContentFormat.JSON))
    assert bad_json.code == Code.BAD_REQUEST and b"JSON" in bad_json.payload
    not_a_map = await d.send(d.build(Code.POST, "alert", cbor2.dumps([1, 2]), ContentFormat.CBOR))
    assert not_a_map.code == Code.BAD_REQUEST
    wrong_kind = await d.send(d.build(Code.POST, "alert", cbor2.dumps({"kind": "check_in_missed"}), ContentFormat.CBOR))
    assert wrong_kind.code == Code.BAD_REQUEST

    wrong_key = await d.send(d.build(Code.POST, "alert", cbor2.dumps({"kind": "sos"}), key="11" * 32))
    assert wrong_key.code == Code.UNAUTHORIZED
    stale = await d.send(d.build(Code.POST, "alert", cbor2.dumps({"kind": "sos"}), timestamp=int(time.time()) - 3600))
    assert stale.code == Code.UNAUTHORIZED
    sos = cbor2.dumps({"kind": "sos"})
    unsigned = aiocoap.Message(code=Code.POST, uri=f"coap://127.0.0.1:{d.port}/alert", payload=sos)
    assert (await d.send(unsigned)).code == Code.UNAUTHORIZED

    big = cbor2.dumps({"kind": "sos", "pad": "x" * 3000})
    too_big = await d.send(d.build(Code.POST, "alert", big, ContentFormat.CBOR))
    assert too_big.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert not env.rx.contacts  # nothing above was forwarded
    assert env.rejected("malformed") >= 3 and env.rejected("bad_auth") >= 2


async def test_observe_follows_the_alert_and_cancel(coap_env: CoapEnv) -> None:
    env = coap_env
    reply = await env.device.alert("sos", message_id="o-1")
    alert_id = reply.body["alert_id"]
    states: list[str] = []
    kinds: set[str | None] = set()

    async def watch() -> None:
        async for doc in env.device.observe(alert_id):
            states.append(doc["state"])
            kinds.add(doc["kind"])
            if doc["state"] == "acknowledged":
                return

    await asyncio.wait_for(watch(), 15)
    assert states[-1] == "acknowledged" and states[0] in ("received", "forwarded", "acknowledged")
    assert kinds == {"sos"}  # every notification names the alert's kind, as the first answer does
    assert len(states) >= 2 or states[0] == "acknowledged"

    cancelled = await env.device.cancel(alert_id)
    assert cancelled.code == Code.CHANGED and cancelled.body["state"] == "cancelled"
    await env.contact(lambda c: c["alert_id"] == alert_id and c["msg_type"] == "cancel")

    other = await env.device.send(env.device.build(Code.GET, "alert/01NOSUCHALERT"))
    assert other.code == Code.NOT_FOUND


async def test_duress_then_cancel_is_held_and_observe_shows_cancelled(coap_env: CoapEnv) -> None:
    """Issue 17 on CoAP: the pendant is answered as if the cancel worked, the alert resource says
    "cancelled", the platform gets an update, and the alert stays open."""
    env = coap_env
    reply = await env.device.alert("duress", message_id="d-1", silent=True)
    alert_id = reply.body["alert_id"]
    await env.contact(lambda c: c["alert_id"] == alert_id and c["msg_type"] == "alert")
    cancelled = await env.device.cancel(alert_id)
    assert cancelled.code == Code.CHANGED and cancelled.body["state"] == "cancelled"
    update = await env.contact(lambda c: c["alert_id"] == alert_id and c["msg_type"] == "update")
    assert DURESS_CANCEL_REASON in update["reason"] and "(coap)" in update["reason"]
    async for doc in env.device.observe(alert_id):
        assert doc["state"] == "cancelled"
        break
    alert = await env.bridge.runtime.store.get_alert(alert_id)
    assert alert is not None and alert.is_open
    assert not any(c["msg_type"] == "cancel" for c in env.rx.contacts)


async def test_well_known_core_lists_alert(coap_env: CoapEnv) -> None:
    ctx = await coap_env.device._ctx()
    msg = aiocoap.Message(code=Code.GET, uri=f"coap://127.0.0.1:{coap_env.device.port}/.well-known/core")
    resp = await ctx.request(msg).response
    assert resp.code == Code.CONTENT
    assert b"</alert>" in resp.payload and b"sosbridge.alert" in resp.payload


async def _block(ctx: aiocoap.Context, port: int, number: int, more: bool, payload: bytes,
                 size1: int | None = None) -> aiocoap.Message:
    msg = aiocoap.Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/alert", payload=payload)
    msg.opt.block1 = aiocoap.optiontypes.BlockOption.BlockwiseTuple(number, more, 2)  # 64-byte blocks
    if size1 is not None:
        msg.opt.size1 = size1
    return await asyncio.wait_for(ctx.request(msg, handle_blockwise=False).response, 10)


async def test_block1_upload_is_refused_at_the_limit_before_it_is_kept(coap_env: CoapEnv) -> None:
    """Issue 14 item 2: unauthenticated Block1 uploads were assembled without limit (23 MB answered
    2.31 Continue). Now the block that would pass 1,024 bytes gets 4.13 with Size1, before any auth."""
    port = coap_env.device.port
    ctx = await aiocoap.Context.create_client_context()
    try:
        answers = [await _block(ctx, port, n, True, b"x" * 64) for n in range(16)]  # 1,024 bytes: allowed
        assert {a.code for a in answers} == {Code.CONTINUE}
        over = await _block(ctx, port, 16, True, b"x" * 64)
        assert over.code == Code.REQUEST_ENTITY_TOO_LARGE and over.opt.size1 == 1024
        announced = await _block(ctx, port, 0, True, b"x" * 64, size1=23_000_000)
        assert announced.code == Code.REQUEST_ENTITY_TOO_LARGE and announced.opt.size1 == 1024
        assert coap_env.rejected("too_large") == 2
    finally:
        await ctx.shutdown()


async def test_concurrent_block1_uploads_are_capped(coap_env: CoapEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    site = coap_env.bridge.runtime.adapters  # the guard is the server context's outermost site
    guard = next(a for a in site if a.name == "coap").context.serversite  # type: ignore[attr-defined]
    monkeypatch.setattr(guard, "max_assemblies", 2)
    port = coap_env.device.port
    clients = [await aiocoap.Context.create_client_context() for _ in range(3)]  # three source ports
    try:
        first = [await _block(c, port, 0, True, b"x" * 64) for c in clients]
        assert [a.code for a in first] == [Code.CONTINUE, Code.CONTINUE, Code.SERVICE_UNAVAILABLE]
        # Finishing (or abandoning past its lifetime) an upload frees its place.
        done = await _block(clients[0], port, 1, False, b"x")
        assert done.code != Code.CONTINUE
        assert (await _block(clients[2], port, 0, True, b"x" * 64)).code == Code.CONTINUE
        assert coap_env.rejected("busy") == 1
    finally:
        for c in clients:
            await c.shutdown()


async def test_observe_delivers_platform_messages(coap_env: CoapEnv) -> None:
    """Issue 16: a platform message reaches the alert's observers (discreet on a silent alert) and the
    delivery is recorded."""
    env = coap_env
    reply = await env.device.alert("panic", message_id="m-1", silent=True)
    alert_id = reply.body["alert_id"]
    texts: list[dict[str, Any]] = []
    observing = asyncio.Event()

    async def watch() -> None:
        async for doc in env.device.observe(alert_id):
            observing.set()
            if "text_message" in doc:
                texts.append(doc)
                return

    task = asyncio.create_task(watch())
    await asyncio.wait_for(observing.wait(), 10)
    await asyncio.sleep(0.2)
    settings = env.bridge.runtime.settings
    async with httpx.AsyncClient(base_url=env.bridge.url) as c:
        r = await c.post(f"/v1/platform/alerts/{alert_id}/messages", json={"text": "Officers nearby."},
                         headers={"Authorization": f"Bearer {settings.platform_token}"})
        assert r.status_code == 201, r.text
        await asyncio.wait_for(task, 10)
        [doc] = texts
        assert doc["text_message"]["text"] == "Officers nearby." and doc["text_message"]["discreet"] is True
        assert doc["state"] in ("received", "forwarded", "acknowledged") and doc["kind"] == "panic"
        await asyncio.sleep(0.2)
        view = (await c.get(f"/v1/platform/alerts/{alert_id}",
                            headers={"Authorization": f"Bearer {settings.platform_token}"})).json()
        assert ("coap", "sent") in [(d["channel"], d["status"])
                                    for d in view["message_deliveries"][r.json()["message_id"]]]
