"""Issue 23 item 3: event streams (`GET /v1/alerts/{id}/events`) never take the capacity `POST /v1/alerts`
and the platform callbacks need: capped per device and alert and in total (429 at once beyond), and each
ends after its maximum duration (device_adapters/http/events.py, docs/operations/security.md).

A real embedded bridge on loopback with a small uvicorn concurrency limit (20) stands in for the 1,000 of a
default install: the attack of the finding (one device token opening streams until the server answers
503 to everyone) at a twentieth of the scale.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from tests.support.bridges import running_bridge

CONCURRENCY = 20
ATTEMPTS = 30


async def _open(client: httpx.AsyncClient, url: str, token: str, stack: contextlib.AsyncExitStack) -> int:
    """Open one stream and keep it open (until the stack closes); its status, or 0 if none came."""
    try:
        request = client.build_request("GET", url, headers={"Authorization": f"Bearer {token}"})
        response = await asyncio.wait_for(client.send(request, stream=True), 5)
    except (httpx.HTTPError, TimeoutError):
        return 0
    stack.push_async_callback(response.aclose)
    return response.status_code


async def test_one_token_cannot_hold_the_server_with_streams(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None, http_limit_concurrency=CONCURRENCY,
                              sse_max_streams=CONCURRENCY // 2) as env:
        attacker, victim = await env.add_device("a-1"), await env.add_device("v-1")
        limits = httpx.Limits(max_connections=ATTEMPTS + 5)
        async with httpx.AsyncClient(base_url=env.url, timeout=10, limits=limits) as client, \
                contextlib.AsyncExitStack() as stack:
            r = await client.post("/v1/alerts", headers={"Authorization": f"Bearer {attacker}"},
                                  json={"kind": "sos", "message_id": "a-1"})
            assert r.status_code == 202, r.text
            url = f"/v1/alerts/{r.json()['alert_id']}/events"
            statuses = await asyncio.gather(*(_open(client, url, attacker, stack) for _ in range(ATTEMPTS)))
            # Three streams for the alert; the rest refused at once (429, or 503 from uvicorn's own limit while
            # the burst itself is in flight), so none of them keeps a connection.
            assert statuses.count(200) == 3 and set(statuses) <= {200, 429, 503}, statuses
            # Another device's SOS still gets in while the attacker's streams are open.
            async with httpx.AsyncClient(base_url=env.url, timeout=10) as other:
                sos = await other.post("/v1/alerts", headers={"Authorization": f"Bearer {victim}"},
                                       json={"kind": "sos", "message_id": "v-1"})
            assert sos.status_code == 202, sos.text
        assert env.bridge.runtime.metrics.rejected_count("http", "too_many_streams_for_alert") == statuses.count(429)


async def test_streams_are_capped_in_total_and_slots_come_back(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None, sse_max_streams=4) as env:
        async with httpx.AsyncClient(base_url=env.url, timeout=10) as client:
            urls = []
            for i in range(3):
                token = await env.add_device(f"d-{i}")
                r = await client.post("/v1/alerts", headers={"Authorization": f"Bearer {token}"},
                                      json={"kind": "sos", "message_id": f"m-{i}"})
                urls.append((f"/v1/alerts/{r.json()['alert_id']}/events", token))
            async with contextlib.AsyncExitStack() as stack:
                got = [await _open(client, url, token, stack) for url, token in (urls[0], urls[0], urls[1], urls[1])]
                assert got == [200, 200, 200, 200]
                assert await _open(client, *urls[2], stack) == 429  # the total is reached
            # Closed streams give their slots back.
            async with contextlib.AsyncExitStack() as stack:
                assert await _open(client, *urls[2], stack) == 200


async def test_a_stream_ends_after_its_maximum_duration(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None, sse_max_s=1.0) as env:
        token = await env.add_device("d-1")
        async with httpx.AsyncClient(base_url=env.url, timeout=10) as client:
            r = await client.post("/v1/alerts", headers={"Authorization": f"Bearer {token}"},
                                  json={"kind": "sos", "message_id": "m-1"})
            url = f"/v1/alerts/{r.json()['alert_id']}/events"
            async with asyncio.timeout(8):
                async with client.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as stream:
                    assert stream.status_code == 200
                    body = b"".join([chunk async for chunk in stream.aiter_bytes()])
            assert b"retry: " in body and b"event: reconnect" in body
