"""A virtual OwnTracks app in HTTP mode: POSTs its JSON to /v1/owntracks with HTTP Basic authentication
(user and the device's bridge token) and the X-Limit-U/X-Limit-D headers, as the app does."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx

from simulator.scenario import RunContext, Step, action


def location(lat: float, lon: float, *, trigger: str | None = None, tid: str = "JJ", **extra: Any) -> dict[str, Any]:
    """A `_type: location` message (owntracks/booklet docs/tech/json.md); `trigger` "u" = manual publish."""
    doc: dict[str, Any] = {"_type": "location", "lat": lat, "lon": lon, "tid": tid, "tst": int(time.time()),
                           "acc": 12, "batt": 80, **extra}
    if trigger is not None:
        doc["t"] = trigger
    return doc


async def post(base_url: str, user: str, device: str, token: str, doc: dict[str, Any] | None) -> httpx.Response:
    auth = base64.b64encode(f"{user}:{token}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "X-Limit-U": user, "X-Limit-D": device,
               "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        return await client.post("/v1/owntracks", content=b"" if doc is None else json.dumps(doc).encode(),
                                 headers=headers)


@action("owntracks.http")
async def _owntracks_http(ctx: RunContext, step: Step) -> None:
    """The phone posts a location; `publish: true` is the manual publish (the SOS trigger). Args: lat, lon."""
    device_id = step.device or ""
    user, _, name = ctx.devices[device_id].identifiers.get("owntracks", "user/phone").partition("/")
    args = dict(step.args)
    doc = location(float(args.pop("lat")), float(args.pop("lon")), trigger="u" if args.pop("publish", False) else None)
    answer = await post(ctx.bridge_url, user, name, ctx.tokens[device_id], doc)
    if answer.status_code != 200 or answer.json() != []:
        raise RuntimeError(f"OwnTracks HTTP post answered {answer.status_code} {answer.text[:100]}")
