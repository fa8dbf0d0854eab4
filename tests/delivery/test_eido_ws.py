"""The EIDO notifier (NENA-STA-024.1a) over real mutual TLS: a `websockets` subscriber with a client
certificate from a CA made here subscribes, receives EIDO events and acknowledges them."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.exceptions import InvalidMessage

from bridge.app.embedded import EmbeddedBridge
from bridge.core.model import Device
from bridge.delivery.eido_ws.hub import Hub, Peer
from bridge.delivery.eido_ws.messages import schema_errors
from bridge.delivery.eido_ws.sink import EidoWsSink
from bridge.delivery.formats.validate import validate_eido_doc
from bridge.delivery.sinks.base import Delivered, Outcome, Retry
from bridge.store.base import OutboxItem
from tests.support.bridges import bridge_settings
from tests.support.eido import Pki, make_pki, recv, send
from tests.support.formats_factory import EDINBURGH_CASTLE, contact, gnss
from tests.support.ports import free_port


def item(msg_type: str = "alert", seq: int = 1) -> OutboxItem:
    c = contact(msg_type=msg_type, seq=seq, location=gnss(*EDINBURGH_CASTLE))
    return OutboxItem(f"i{seq}", c.alert_id, seq, msg_type, f"{c.alert_id}:{seq}", c.to_json(), True)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
async def sink(pki: Pki) -> AsyncIterator[EidoWsSink]:
    s = EidoWsSink(f"wss://127.0.0.1:{free_port()}/eido", cert_file=str(pki.server_cert),
                   key_file=str(pki.server_key), client_ca_file=str(pki.ca), timeout_s=4, redeliver_s=0.3)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def ws_url(sink: EidoWsSink) -> str:
    assert sink.server is not None
    return f"wss://127.0.0.1:{sink.server.bound_port}/eido"


async def subscriber(sink: EidoWsSink, pki: Pki) -> ClientConnection:
    async with asyncio.timeout(5):
        return await connect(ws_url(sink), ssl=pki.client_tls(pki.client_cert, pki.client_key))


async def subscribe(ws: Connection, request_id: str = "r1", **fields: Any) -> dict[str, Any]:
    await send(ws, {"subscribe": {"requestId": request_id, "requestType": "EIDO", "requestSubType": "new",
                                  "requestAccepts": "application/emergency.eido+json", "expires": 600, **fields}})
    answer = await recv(ws)
    assert schema_errors("subscribeResponse", answer) == []
    return dict(answer["subscribeResponse"])


async def next_event(ws: Connection, timeout: float = 5.0) -> dict[str, Any]:
    message = await recv(ws, timeout)
    assert schema_errors("event", message) == [], message
    return dict(message["event"])


async def ack(ws: Connection, event: dict[str, Any], code: int = 200) -> None:
    await send(ws, {"eventResponse": {"transactionId": event["transactionId"], "statusCode": code,
                                      "statusText": "OK"}})


async def test_a_subscriber_gets_a_new_alert_and_its_update_and_acks_them(sink: EidoWsSink, pki: Pki) -> None:
    async with await subscriber(sink, pki) as ws:
        sub = await subscribe(ws)
        assert (sub["statusCode"], sub["maxRate"], sub["expires"]) == (200, 0, 600)
        first = await next_event(ws)  # a new subscription gets the active incidents at once: none
        assert first["notification"] == [] and first["subscriptionId"] == sub["subscriptionId"]
        for it in (item("alert", 1), item("update", 2)):
            delivery = asyncio.create_task(sink.deliver(it))
            ev = await next_event(ws)
            (eido,) = ev["notification"]
            assert validate_eido_doc(eido) == []
            assert f"msg_type={it.msg_type}" in eido["alarmsSensorsComponent"][0]["csaaAlarmInformation"]
            await ack(ws, ev)
            async with asyncio.timeout(5):
                assert await delivery == Delivered(200)


async def test_an_unacknowledged_event_is_redelivered_with_its_transaction_id(sink: EidoWsSink, pki: Pki) -> None:
    async with await subscriber(sink, pki) as ws:
        await subscribe(ws)
        await next_event(ws)
        delivery = asyncio.create_task(sink.deliver(item()))
        ev1 = await next_event(ws)
        ev2 = await next_event(ws)  # no eventResponse: the same event again
        assert ev1 == ev2
        await ack(ws, ev2)
        async with asyncio.timeout(5):
            assert await delivery == Delivered(200)


async def test_nobody_subscribed_or_nobody_acking_is_a_retry(sink: EidoWsSink, pki: Pki) -> None:
    async with asyncio.timeout(6):
        assert await sink.deliver(item()) == Retry("no EIDO subscriber")
    sink.timeout_s = 1.0
    async with await subscriber(sink, pki) as ws:
        await subscribe(ws)
        initial = await next_event(ws)
        assert len(initial["notification"]) == 1  # the incident recorded above is active
        async with asyncio.timeout(6):
            outcome: Outcome = await sink.deliver(item("update", 2))
        assert outcome == Retry("no eventResponse 200 within 1 s")


async def test_subscription_bookkeeping(sink: EidoWsSink, pki: Pki) -> None:
    async with await subscriber(sink, pki) as ws:
        bad = await subscribe(ws, "r0", requestType="CAP")
        assert bad["statusCode"] == 400
        assert (await subscribe(ws, "r1", requestAccepts="text/plain"))["statusCode"] == 406
        assert (await subscribe(ws, "r2", requestSubType="single", incidentId="nope"))["statusCode"] == 404
        assert (await subscribe(ws, "r3", subscriptionId="unknown"))["statusCode"] == 481
        await send(ws, {"hello": {"requestId": "r4"}})
        assert await recv(ws) == {"response": {"requestId": "r4", "statusCode": 501, "statusText": "Not implemented"}}
        await send(ws, {"subscribe": {"requestId": "big", "qualFilter": "x" * 70000}})
        assert (await recv(ws))["subscribeResponse"]["statusCode"] == 413
        # Two subscriptions on one socket both get the event; one unsubscribes.
        a = await subscribe(ws, "a")
        await next_event(ws)
        b = await subscribe(ws, "b")
        await next_event(ws)
        delivery = asyncio.create_task(sink.deliver(item()))
        events = [await next_event(ws), await next_event(ws)]
        assert {e["subscriptionId"] for e in events} == {a["subscriptionId"], b["subscriptionId"]}
        for e in events:
            await ack(ws, e)
        async with asyncio.timeout(5):
            assert await delivery == Delivered(200)
        await send(ws, {"unsubscribe": {"requestId": "u1", "subscriptionId": a["subscriptionId"]}})
        assert (await recv(ws))["unsubscribeResponse"]["statusCode"] == 200
        await send(ws, {"unsubscribe": {"requestId": "u2", "subscriptionId": a["subscriptionId"]}})
        assert (await recv(ws))["unsubscribeResponse"]["statusCode"] == 481
        assert set(sink.hub.subscriptions) == {b["subscriptionId"]}
        # A single subscription to the incident, by its EIDO $id.
        reference = next(iter(sink.hub.incidents.values())).reference_id
        single = await subscribe(ws, "s", requestSubType="single", incidentId=reference)
        assert single["statusCode"] == 200
        assert (await next_event(ws))["notification"][0]["$id"] == reference
    async with asyncio.timeout(5):
        while sink.hub.subscriptions:  # noqa: ASYNC110 - the server notices the close on its own task
            await asyncio.sleep(0.02)


async def test_keepalives_at_min_rate_and_terminate_on_stop(sink: EidoWsSink, pki: Pki) -> None:
    async with await subscriber(sink, pki) as ws:
        sub = await subscribe(ws, minRate=1)
        assert sub["minRate"] == 1
        await next_event(ws)
        keepalive = await next_event(ws, timeout=4)  # nothing happened for a second: an empty event
        assert keepalive["notification"] == []
        await sink.hub.stop()
        message = await recv(ws)
        if "event" in message:  # a keep-alive raced the stop
            message = await recv(ws)
        assert schema_errors("terminate", message) == []
        assert message["terminate"]["subscriptionId"] == sub["subscriptionId"]


async def test_mutual_tls_and_eido_retrieval(sink: EidoWsSink, pki: Pki) -> None:
    for cert, key in ((None, None), (pki.stranger_cert, pki.stranger_key)):
        # The server refuses the handshake; TLS 1.3 tells the client only when it reads (the upgrade answer).
        with pytest.raises((ssl.SSLError, ConnectionError, InvalidMessage)):
            async with asyncio.timeout(5):
                refused = await connect(ws_url(sink), ssl=pki.client_tls(cert, key))
                await refused.recv()  # TLS 1.3 reports a refused client certificate on the first read
    async with await subscriber(sink, pki) as ws:
        await subscribe(ws)
        await next_event(ws)
        delivery = asyncio.create_task(sink.deliver(item()))
        await ack(ws, await next_event(ws))
        async with asyncio.timeout(5):
            await delivery
    reference = next(iter(sink.hub.incidents.values())).reference_id
    base = ws_url(sink).replace("wss://", "https://")
    tls = pki.client_tls(pki.client_cert, pki.client_key)
    async with httpx.AsyncClient(verify=tls, timeout=5) as client:
        r = await client.get(f"{base}/{quote(reference, safe='')}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/emergency.eido+json"
        assert validate_eido_doc(json.loads(r.content)) == [] and r.json()["$id"] == reference
        assert (await client.get(f"{base}/unknown")).status_code == 404


async def test_the_bridge_notifies_a_cad_of_a_new_alert_and_its_update(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("SOSBRIDGE_ROUTES", json.dumps([{
        "name": "cad", "url": f"wss://127.0.0.1:{port}/eido", "eido_cert_file": str(pki.server_cert),
        "eido_key_file": str(pki.server_key), "eido_client_ca_file": str(pki.ca)}]))
    settings = bridge_settings(tmp_path, "http://127.0.0.1:9/unused", "s" * 32, "p" * 32)
    token = "w" * 24
    async with EmbeddedBridge(settings) as eb:
        await eb.runtime.store.put_device(Device(device_id="w"))
        await eb.runtime.store.set_credential("w", "token", token)
        async with asyncio.timeout(5):
            ws = await connect(f"wss://127.0.0.1:{port}/eido", ssl=pki.client_tls(pki.client_cert, pki.client_key))
        async with ws, httpx.AsyncClient(base_url=eb.url, timeout=10,
                                         headers={"Authorization": f"Bearer {token}"}) as c:
            await subscribe(ws)
            await next_event(ws)
            r = await c.post("/v1/alerts", json={"kind": "sos", "location": {"lat": 55.95, "lon": -3.19}})
            alert_id = r.json()["alert_id"]
            new = await next_event(ws)
            await ack(ws, new)
            await c.post(f"/v1/alerts/{alert_id}/location",
                         json={"location": {"lat": 55.96, "lon": -3.2, "accuracy_m": 10}})
            update = await next_event(ws)
            await ack(ws, update)
            for ev, msg_type in ((new, "alert"), (update, "update")):
                (eido,) = ev["notification"]
                assert validate_eido_doc(eido) == []
                assert f"msg_type={msg_type}" in eido["alarmsSensorsComponent"][0]["csaaAlarmInformation"]
                assert alert_id in eido["$id"]
            async with asyncio.timeout(5):
                while (a := await eb.runtime.store.get_alert(alert_id)) is None or a.state.value == "received":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def close(self) -> None:
        return None


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                     max_leaves=10)
_names = st.sampled_from(["subscribe", "unsubscribe", "eventResponse", "terminateResponse", "event", "x"])
_keys = st.sampled_from(["requestId", "requestType", "requestSubType", "requestAccepts", "incidentId",
                         "subscriptionId", "expires", "minRate", "transactionId", "statusCode", "qualFilter"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json.map(json.dumps),
                 st.tuples(_names, st.dictionaries(_keys, _json, max_size=6)).map(lambda t: json.dumps({t[0]: t[1]}))))
def test_fuzz_every_subscriber_message_gets_a_valid_answer_or_none(raw: str | bytes) -> None:
    async def run() -> list[str]:
        rec = _Recorder()
        await Hub().handle(Peer(rec.send, rec.close), raw)
        return rec.sent

    for text in asyncio.run(run()):
        message = json.loads(text)
        (name,) = message
        assert schema_errors(name, message) == [], message
