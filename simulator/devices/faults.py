"""Fault steps: receiver down, slow or back up; pauses."""

from __future__ import annotations

import asyncio

import httpx

from simulator.scenario import RunContext, Step, action


async def _set_mode(ctx: RunContext, mode: str, slow_s: float = 5.0) -> None:
    receiver = getattr(ctx.receiver, "receiver", None)
    if receiver is not None:  # in-process receiver
        receiver.mode, receiver.slow_s = mode, slow_s
        return
    async with httpx.AsyncClient() as client:
        await client.post(f"{ctx.receiver.base_url}/control/mode/{mode}", params={"slow_s": slow_s})


@action("fault.receiver_down")
async def receiver_down(ctx: RunContext, step: Step) -> None:
    await _set_mode(ctx, "down")


@action("fault.receiver_slow")
async def receiver_slow(ctx: RunContext, step: Step) -> None:
    await _set_mode(ctx, "slow", float(step.args.get("seconds", 5.0)))


@action("fault.receiver_up")
async def receiver_up(ctx: RunContext, step: Step) -> None:
    await _set_mode(ctx, "normal")


@action("wait")
async def wait(ctx: RunContext, step: Step) -> None:
    await asyncio.sleep(float(step.args.get("seconds", 1.0)))


@action("fault.drop_connection")
async def drop_connection(ctx: RunContext, step: Step) -> None:
    """Open connections that send half a request and vanish; the bridge must shrug them off."""
    url = httpx.URL(ctx.bridge_url)
    for _ in range(int(step.args.get("count", 3))):
        _reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(b'POST /v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"kind": ')
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    async with httpx.AsyncClient() as client:
        if (await client.get(f"{ctx.bridge_url}/healthz")).status_code != 200:
            raise RuntimeError("bridge stopped answering after dropped connections")
