"""A virtual wearable speaking the bridge's HTTP API: falls with a cancellable countdown, panics, trails."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from simulator.scenario import RunContext, Step, action


@dataclass
class VirtualWearable:
    bridge_url: str
    device_id: str
    token: str
    client: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(base_url=self.bridge_url, timeout=10.0)
        return self.client

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def alert(self, kind: str, *, retries: int = 5, **fields: Any) -> dict[str, Any]:
        """Send an alert the way firmware should: same message id on every retry until a 202."""
        body = {"kind": kind, "message_id": fields.pop("message_id", None) or uuid.uuid4().hex, **fields}
        last: httpx.Response | None = None
        for attempt in range(retries):
            try:
                last = await self._client().post("/v1/alerts", json=body, headers=self.headers)
            except httpx.HTTPError:
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if last.status_code != 503:
                break
            await asyncio.sleep(float(last.headers.get("Retry-After", "1")))
        if last is None:
            raise ConnectionError("bridge unreachable")
        return {"status": last.status_code, **last.json()}

    async def fall(self, countdown_s: float, cancel_during_countdown: bool, **fields: Any) -> dict[str, Any] | None:
        """Fall detected: the wearer has `countdown_s` to press "I'm OK" before the alert is sent."""
        deadline = time.monotonic() + countdown_s
        while time.monotonic() < deadline:
            if cancel_during_countdown:
                return None  # the wearer cancelled on the watch; nothing leaves the device
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return await self.alert("fall", **fields)

    async def location(self, alert_id: str, lat: float, lon: float, accuracy_m: float) -> dict[str, Any]:
        r = await self._client().post(
            f"/v1/alerts/{alert_id}/location",
            json={"location": {"lat": lat, "lon": lon, "accuracy_m": accuracy_m}},
            headers=self.headers,
        )
        return {"status": r.status_code, **r.json()}

    async def cancel(self, alert_id: str) -> dict[str, Any]:
        r = await self._client().post(f"/v1/alerts/{alert_id}/cancel", json={"reason": "im_ok"}, headers=self.headers)
        return {"status": r.status_code, **r.json()}

    async def status(self, alert_id: str) -> dict[str, Any]:
        r = await self._client().get(f"/v1/alerts/{alert_id}", headers=self.headers)
        return {"status": r.status_code, **r.json()}

    async def mark_read(self, alert_id: str, message_id: str) -> int:
        """The app showed the person a platform message (the bridge records it as read)."""
        r = await self._client().post(f"/v1/alerts/{alert_id}/messages/{message_id}/read", headers=self.headers)
        return r.status_code

    async def wait_state(self, alert_id: str, states: set[str], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = (await self.status(alert_id)).get("state", "")
            if state in states:
                return state
            await asyncio.sleep(0.05)
        raise TimeoutError(f"alert {alert_id} still {state!r}")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def wearable(ctx: RunContext, device_id: str) -> VirtualWearable:
    key = f"wearable:{device_id}"
    if key not in ctx.scratch:
        ctx.scratch[key] = VirtualWearable(ctx.bridge_url, device_id, ctx.tokens[device_id])
    w: VirtualWearable = ctx.scratch[key]
    return w


def _require_device(step: Step) -> str:
    if not step.device:
        raise ValueError(f"step {step.action} needs a device")
    return step.device


@action("http.alert")
async def http_alert(ctx: RunContext, step: Step) -> None:
    """Args: kind, location, silent, ...; `clock_skew_s` sets the device's clock that far off."""
    device = _require_device(step)
    args = dict(step.args)
    kind = args.pop("kind", "sos")
    skew = args.pop("clock_skew_s", None)
    if skew is not None:
        args["occurred_at"] = datetime.fromtimestamp(time.time() + float(skew), UTC).isoformat()
    args.setdefault("message_id", uuid.uuid4().hex)
    ctx.scratch[f"last_body:{device}"] = {"kind": kind, **args}
    result = await wearable(ctx, device).alert(kind, **args)
    if result["status"] != 202:
        raise RuntimeError(f"{device}: alert refused: {result}")
    ctx.last_alert[device] = result["alert_id"]


@action("http.replay")
async def http_replay(ctx: RunContext, step: Step) -> None:
    """Send the device's last alert again, byte for byte: it must be absorbed as a duplicate."""
    device = _require_device(step)
    body = dict(ctx.scratch[f"last_body:{device}"])
    result = await wearable(ctx, device).alert(body.pop("kind"), **body)
    if result.get("outcome") != "duplicate":
        raise RuntimeError(f"{device}: replay was not recognised as a duplicate: {result}")


@action("http.garbage")
async def http_garbage(ctx: RunContext, step: Step) -> None:
    """Random bytes with a valid token: refused with a 4xx and a reason, and the bridge keeps serving."""
    device = _require_device(step)
    w = wearable(ctx, device)
    rng = random.Random(step.args.get("seed", 0))
    for _ in range(int(step.args.get("count", 5))):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
        r = await w._client().post(
            "/v1/alerts", content=junk, headers={**w.headers, "Content-Type": "application/json"}
        )
        if not 400 <= r.status_code < 500 or "reason" not in r.json():
            raise RuntimeError(f"garbage got {r.status_code}: {r.text[:200]}")


@action("http.fall")
async def http_fall(ctx: RunContext, step: Step) -> None:
    device = _require_device(step)
    args = dict(step.args)
    countdown = float(args.pop("countdown_s", 1.0))
    cancel = bool(args.pop("cancel_during_countdown", False))
    result = await wearable(ctx, device).fall(countdown, cancel, **args)
    if result is not None:
        ctx.last_alert[device] = result["alert_id"]


@action("http.location")
async def http_location(ctx: RunContext, step: Step) -> None:
    device = _require_device(step)
    w = wearable(ctx, device)
    for point in step.args.get("trail", []):
        await w.location(ctx.last_alert[device], point["lat"], point["lon"], point.get("accuracy_m", 10))
        await asyncio.sleep(float(step.args.get("interval_s", 0.1)))


@action("http.wait_state")
async def http_wait_state(ctx: RunContext, step: Step) -> None:
    device = _require_device(step)
    states = set(step.args.get("states", ["forwarded", "acknowledged"]))
    await wearable(ctx, device).wait_state(ctx.last_alert[device], states, float(step.args.get("timeout_s", 10)))


@action("http.cancel")
async def http_cancel(ctx: RunContext, step: Step) -> None:
    device = _require_device(step)
    result = await wearable(ctx, device).cancel(ctx.last_alert[device])
    if result["status"] != 202:
        raise RuntimeError(f"{device}: cancel refused: {result}")


@action("platform.message")
async def platform_message(ctx: RunContext, step: Step) -> None:
    """The platform texts the person about the device's last alert (args: text, language, audible,
    expect_discreet, expect_audible, read); the device must then see it in GET /v1/alerts/{id}, and
    (unless `read: false`) the app reports it shown to the person."""
    device = _require_device(step)
    token = getattr(ctx.settings, "platform_token", None)
    if not token:
        raise RuntimeError("platform.message needs the bridge's platform credential")
    alert_id = ctx.last_alert[device]
    args = dict(step.args)
    expect_discreet = args.pop("expect_discreet", None)
    expect_audible = args.pop("expect_audible", None)
    read = bool(args.pop("read", True))
    w = wearable(ctx, device)
    r = await w._client().post(f"/v1/platform/alerts/{alert_id}/messages", json=args,
                               headers={"Authorization": f"Bearer {token}"})
    if r.status_code != 201:
        raise RuntimeError(f"{device}: platform message refused: {r.status_code} {r.text[:200]}")
    sent = r.json()
    for name, want in (("discreet", expect_discreet), ("audible", expect_audible)):
        if want is not None and sent[name] is not want:
            raise RuntimeError(f"{device}: message {name} is {sent[name]}, expected {want}")
    seen = (await w.status(alert_id)).get("messages", [])
    if not any(m.get("message_id") == sent["message_id"] for m in seen):
        raise RuntimeError(f"{device}: the device does not see the platform's message")
    if read and (status := await w.mark_read(alert_id, sent["message_id"])) != 200:
        raise RuntimeError(f"{device}: marking the platform's message read was refused: {status}")


@action("http.reply")
async def http_reply(ctx: RunContext, step: Step) -> None:
    """The person answers the platform in text (args: text)."""
    device = _require_device(step)
    w = wearable(ctx, device)
    alert_id = ctx.last_alert[device]
    r = await w._client().post(f"/v1/alerts/{alert_id}/messages", json={"text": step.args.get("text", "")},
                               headers=w.headers)
    if r.status_code != 202:
        raise RuntimeError(f"{device}: reply refused: {r.status_code} {r.text[:200]}")
