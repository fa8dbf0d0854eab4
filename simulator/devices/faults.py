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
