"""Two-way text (issue 16 part 1) over real HTTP on loopback, with the reference receiver: platform → person
(stored, on GET and server-sent events, deliveries recorded), person → platform (a `message` contact in
order), the silent rule, and bad input refused with nothing stored."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from bridge.core.messages import MAX_TEXT_CHARS
from tests.device_adapters.test_http_api import wait_state
from tests.support.bridges import BridgeEnv, running_bridge


def platform(env: BridgeEnv) -> dict[str, str]:
    return {"Authorization": f"Bearer {env.platform_token}"}


async def raise_alert(c: httpx.AsyncClient, **body: Any) -> str:
    r = await c.post("/v1/alerts", json={"kind": "sos", **body})
    assert r.status_code == 202, r.text
    return str(r.json()["alert_id"])


async def events(env: BridgeEnv, alert_id: str) -> list[str]:
    """The alert's message history (delivery confirmations from the forwarder race these tests)."""
    return [h.event for h in await env.store.history(alert_id) if h.event.startswith("message")]


async def test_platform_message_reaches_the_device_and_is_recorded(bridge_env: BridgeEnv) -> None:
    token = await bridge_env.add_device("text-1")
    async with httpx.AsyncClient(base_url=bridge_env.url, headers={"Authorization": f"Bearer {token}"}) as c:
        alert_id = await raise_alert(c)
        await wait_state(c, alert_id, "acknowledged")
        r = await c.post(f"/v1/platform/alerts/{alert_id}/messages", headers=platform(bridge_env),
                         json={"text": "  Officers are 5 minutes away.\x07 ", "language": "en-GB"})
        assert r.status_code == 201, r.text
        sent = r.json()
        assert (sent["text"], sent["discreet"], sent["audible"]) == ("Officers are 5 minutes away.", False, False)
        assert (await bridge_env.store.get_alert(alert_id)).state.value == "acknowledged"  # no state change
        for _ in range(2):  # the second poll records nothing new
            body = (await c.get(f"/v1/alerts/{alert_id}")).json()
            assert body["messages"] == [{
                "message_id": sent["message_id"], "from": "platform", "text": "Officers are 5 minutes away.",
                "language": "en-GB", "discreet": False, "at": sent["at"],
            }]
        history = await bridge_env.store.history(alert_id)
        out = [h for h in history if h.event == "message_out"]
        assert len(out) == 1 and out[0].detail["by"] == "platform"
        view = (await c.get(f"/v1/platform/alerts/{alert_id}", headers=platform(bridge_env))).json()
        assert [(d["channel"], d["status"]) for d in view["message_deliveries"][sent["message_id"]]] == [
            ("http", "sent")]
        # The app says the person has read it: recorded once; an unknown message is not found.
        for _ in range(2):
            read = await c.post(f"/v1/alerts/{alert_id}/messages/{sent['message_id']}/read")
            assert read.status_code == 200 and read.json()["read"] is True
        missing = await c.post(f"/v1/alerts/{alert_id}/messages/nope/read")
        assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
        view = (await c.get(f"/v1/platform/alerts/{alert_id}", headers=platform(bridge_env))).json()
        assert [(d["channel"], d["status"]) for d in view["message_deliveries"][sent["message_id"]]] == [
            ("http", "sent"), ("app", "read")]


async def read_sse(response: httpx.Response, want: int) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            got.append((event, json.loads(line[6:])))
            if sum(e == "message" for e, _ in got) >= want:
                return got
    return got


async def test_server_sent_events_carry_status_and_messages(bridge_env: BridgeEnv) -> None:
    token = await bridge_env.add_device("text-2")
    async with httpx.AsyncClient(base_url=bridge_env.url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=10) as c:
        alert_id = await raise_alert(c)
        first = await c.post(f"/v1/platform/alerts/{alert_id}/messages", headers=platform(bridge_env),
                             json={"text": "Are you able to talk?"})
        async with c.stream("GET", f"/v1/alerts/{alert_id}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            reader = asyncio.create_task(read_sse(stream, 2))
            await asyncio.sleep(0.3)
            second = await c.post(f"/v1/platform/alerts/{alert_id}/messages", headers=platform(bridge_env),
                                  json={"text": "Stay where you are."})
            got = await asyncio.wait_for(reader, 10)
        assert got[0][0] == "status" and got[0][1]["alert_id"] == alert_id
        assert [(e, b["text"]) for e, b in got if e == "message"] == [("message", "Are you able to talk?"),
                                                        ("message", "Stay where you are.")]
        view = (await c.get(f"/v1/platform/alerts/{alert_id}", headers=platform(bridge_env))).json()
        for mid in (first.json()["message_id"], second.json()["message_id"]):
            assert ("sse", "sent") in [(d["channel"], d["status"]) for d in view["message_deliveries"][mid]]


async def test_events_stream_of_another_device_is_not_found(bridge_env: BridgeEnv) -> None:
    mine = await bridge_env.add_device("text-3")
    other = await bridge_env.add_device("text-4")
    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        c.headers["Authorization"] = f"Bearer {mine}"
        alert_id = await raise_alert(c)
        c.headers["Authorization"] = f"Bearer {other}"
        r = await c.get(f"/v1/alerts/{alert_id}/events")
        assert r.status_code == 404 and r.json()["error"] == "not_found"


@pytest.mark.parametrize("allowed", [False, True])
async def test_silent_alert_messages_are_discreet(bridge_env: BridgeEnv, allowed: bool) -> None:
    token = await bridge_env.add_device(f"quiet-{allowed}", audible_on_silent=allowed)
    async with httpx.AsyncClient(base_url=bridge_env.url, headers={"Authorization": f"Bearer {token}"}) as c:
        alert_id = await raise_alert(c, kind="duress", silent=True)
        r = await c.post(f"/v1/platform/alerts/{alert_id}/messages", headers=platform(bridge_env),
                         json={"text": "We are coming. Do not reply if unsafe.", "audible": True})
        assert r.status_code == 201, r.text
        assert r.json()["discreet"] is True
        assert r.json()["audible"] is allowed  # only when the device record allows it
        [msg] = (await c.get(f"/v1/alerts/{alert_id}")).json()["messages"]
        assert msg["discreet"] is True


async def test_person_replies_as_a_message_contact_in_order(bridge_env: BridgeEnv) -> None:
    token = await bridge_env.add_device("text-5")
    async with httpx.AsyncClient(base_url=bridge_env.url, headers={"Authorization": f"Bearer {token}"}) as c:
        alert_id = await raise_alert(c, message_id="a-1")
        r = await c.post(f"/v1/alerts/{alert_id}/messages", json={"text": "I can't speak\x00, he is here",
                                                                    "message_id": "t-1"})
        assert r.status_code == 202, r.text
        assert r.json()["alert_id"] == alert_id
        again = await c.post(f"/v1/alerts/{alert_id}/messages", json={"text": "I can't speak, he is here",
                                                                        "message_id": "t-1"})
        assert again.status_code == 202 and again.json()["outcome"] == "duplicate"
        contacts = await bridge_env.receiver.wait_for(lambda cs: len(cs) >= 2)
        assert [x["msg_type"] for x in contacts] == ["alert", "message"]
        message = contacts[1]
        assert message["message"]["text"] == "I can't speak, he is here"
        assert message["message"]["message_id"] == "t-1" and message["message"]["transport"] == "http"
        assert message["seq"] == 2 and message["references"] == [f"{alert_id}:1"]
        await asyncio.sleep(0.2)
        alert = await bridge_env.store.get_alert(alert_id)
        assert alert is not None and alert.state.value in ("forwarded", "acknowledged")
        body = (await c.get(f"/v1/alerts/{alert_id}")).json()
        assert [m["from"] for m in body["messages"]] == ["person"]


async def test_bad_messages_are_refused_and_nothing_is_stored(tmp_path: Any) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None) as env:
        token = await env.add_device("text-6")
        other = await env.add_device("text-7")
        async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {token}"}) as c:
            alert_id = await raise_alert(c)
            c.headers["Authorization"] = f"Bearer {other}"
            other_alert = await raise_alert(c)
            c.headers["Authorization"] = f"Bearer {token}"
            assert await events(env, alert_id) == []
            seq = (await env.store.get_alert(alert_id)).contact_seq
            cases: list[tuple[str, str, dict[str, str], Any, int, str]] = [
                ("empty", f"/v1/platform/alerts/{alert_id}/messages", platform(env), {"text": ""}, 422,
                 "invalid_text"),
                ("blank", f"/v1/platform/alerts/{alert_id}/messages", platform(env), {"text": " \t\x01\x7f "},
                 422, "invalid_text"),
                ("too long", f"/v1/platform/alerts/{alert_id}/messages", platform(env),
                 {"text": "x" * (MAX_TEXT_CHARS + 1)}, 422, "invalid_text"),
                ("no text", f"/v1/platform/alerts/{alert_id}/messages", platform(env), {}, 422, "invalid"),
                ("unknown field", f"/v1/platform/alerts/{alert_id}/messages", platform(env),
                 {"text": "hi", "sound": 1}, 422, "invalid"),
                ("bad language", f"/v1/platform/alerts/{alert_id}/messages", platform(env),
                 {"text": "hi", "language": "english please"}, 422, "invalid"),
                ("device token on the platform route", f"/v1/platform/alerts/{alert_id}/messages", {},
                 {"text": "hi"}, 401, "unauthorised"),
                ("unknown alert", "/v1/platform/alerts/nope/messages", platform(env), {"text": "hi"}, 404,
                 "not_found"),
                ("person: empty", f"/v1/alerts/{alert_id}/messages", {}, {"text": "\x00"}, 422, "invalid_text"),
                ("person: too long", f"/v1/alerts/{alert_id}/messages", {}, {"text": "é" * 1001}, 422,
                 "invalid_text"),
                ("person: another device's alert", f"/v1/alerts/{other_alert}/messages", {}, {"text": "hi"}, 404,
                 "not_found"),
                ("person: unknown alert", "/v1/alerts/nope/messages", {}, {"text": "hi"}, 404, "not_found"),
            ]
            for name, path, headers, body, status, code in cases:
                r = await c.post(path, json=body, headers=headers)
                assert (r.status_code, r.json()["error"]) == (status, code), (name, r.text)
                assert set(r.json()) == {"error", "reason"}, name
            assert await events(env, alert_id) == []
            assert (await env.store.get_alert(alert_id)).contact_seq == seq
            ok = await c.post(f"/v1/platform/alerts/{alert_id}/messages", headers=platform(env),
                              json={"text": "x" * MAX_TEXT_CHARS})
            assert ok.status_code == 201
            # Closed alerts take no messages, either way.
            r = await c.post(f"/v1/platform/alerts/{alert_id}/resolve", headers=platform(env))
            assert r.status_code == 200
            closed = await c.post(f"/v1/platform/alerts/{alert_id}/messages", headers=platform(env),
                                  json={"text": "hello?"})
            assert (closed.status_code, closed.json()["error"]) == (409, "alert_closed")
            reply = await c.post(f"/v1/alerts/{alert_id}/messages", json={"text": "hello?"})
            assert (reply.status_code, reply.json()["error"]) == (409, "alert_closed")
            assert (await events(env, alert_id)).count("message_out") == 1
            assert "message_in" not in await events(env, alert_id)
