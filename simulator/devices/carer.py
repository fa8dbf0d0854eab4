"""A virtual emergency contact's phone: a local webhook catching what the bridge tells a person's family or
carer (docs/operations/emergency-contacts.md), so a scenario can show a carer notified, and prove that a
silent alert notifies nobody.

A scenario that says `needs: [carer]` gets one phone for the run; a device's `carer:` entry (an emergency
contact without an address: name, relation, language, kinds, notify_silent) is registered with this phone's
webhook as its address. Step `carer.expect` waits for the notifications of the device's last alert
(`events: [alert, ack]`), or with `none: true` checks that none arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bridge.infra.serving import free_port
from simulator.scenario import RunContext, Step, action, device_spec_key

SCRATCH_KEY = "carer_phone"


class CarerPhone:
    """`async with CarerPhone() as phone:` a webhook on a free loopback port recording every notification."""

    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/carer"
        self._runner: web.AppRunner | None = None

    async def _take(self, request: web.Request) -> web.Response:
        note = await request.json()
        async with self._arrived:
            self.notes.append(note)
            self._arrived.notify_all()
        return web.Response(status=204)

    async def __aenter__(self) -> CarerPhone:
        app = web.Application()
        app.router.add_post("/carer", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def about(self, alert_id: str) -> list[dict[str, Any]]:
        return [n for n in self.notes if n.get("alert_id") == alert_id]

    async def wait_events(self, alert_id: str, events: set[str], timeout: float) -> list[dict[str, Any]]:
        """The notifications of `alert_id` once every one of `events` has arrived (TimeoutError if not)."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: events <= {n.get("event") for n in self.about(alert_id)}), timeout
            )
        return self.about(alert_id)


def emergency_contact_for(ctx: RunContext, device_id: str, carer: dict[str, Any]) -> dict[str, Any]:
    """A scenario device's `carer:` entry as an emergency contact whose webhook is this run's phone."""
    phone: CarerPhone | None = ctx.scratch.get(SCRATCH_KEY)
    if phone is None:
        raise RuntimeError(f"device {device_id!r} has a carer, but this run has no virtual carer phone "
                           "(the scenario needs: [carer], and the embedded stack)")
    return {**carer, "webhook_url": phone.url}


@device_spec_key("carer")
def add_carer(ctx: RunContext, spec: dict[str, Any], carer: Any) -> None:
    """`carer:` in a scenario's device entry: the person gets an emergency contact on the virtual phone."""
    person = dict(spec.get("person") or {})
    contact = emergency_contact_for(ctx, str(spec.get("device_id")), carer)
    person["emergency_contacts"] = [*person.get("emergency_contacts", []), contact]
    spec["person"] = person


@action("carer.expect")
async def carer_expect(ctx: RunContext, step: Step) -> None:
    """The device's carer is told about its last alert (args: events, default [alert]; timeout_s), or, with
    `none: true`, told nothing within `timeout_s` (default 1 s)."""
    if not step.device:
        raise ValueError(f"step {step.action!r} needs a device")
    phone: CarerPhone | None = ctx.scratch.get(SCRATCH_KEY)
    if phone is None:
        raise RuntimeError("carer.expect needs the virtual carer phone (the scenario needs: [carer])")
    alert_id = ctx.last_alert[step.device]
    if step.args.get("none"):
        deadline = time.monotonic() + float(step.args.get("timeout_s", 1.0))
        while time.monotonic() < deadline:
            if told := phone.about(alert_id):
                raise RuntimeError(f"{step.device}: its carer was told about a silent alert: {told[0]['subject']!r}")
            await asyncio.sleep(0.05)
        return
    events = {str(e) for e in step.args.get("events", ["alert"])}
    try:
        await phone.wait_events(alert_id, events, float(step.args.get("timeout_s", 10.0)))
    except TimeoutError:
        got = sorted({str(n.get("event")) for n in phone.about(alert_id)})
        raise RuntimeError(f"{step.device}: its carer was not told {sorted(events)} (told: {got})") from None


@contextlib.asynccontextmanager
async def carer_phone_for(virtual: dict[str, Any]) -> AsyncIterator[CarerPhone]:
    """Start the run's phone and put it where scenario steps find it."""
    async with CarerPhone() as phone:
        virtual[SCRATCH_KEY] = phone
        yield phone
