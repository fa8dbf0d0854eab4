"""A virtual constrained device speaking the bridge's CoAP API: signed POST /alert and Observe."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiocoap
import cbor2
from aiocoap import Code
from aiocoap.numbers import ContentFormat

from device_adapters.coap.auth import sign_query
from simulator.scenario import RunContext, Step, action


@dataclass
class CoapReply:
    code: Code
    payload: bytes
    location_path: tuple[str, ...] = ()

    @property
    def body(self) -> Any:
        try:
            return cbor2.loads(self.payload)
        except Exception:
            return json.loads(self.payload)


@dataclass
class VirtualCoapDevice:
    host: str
    port: int
    device_id: str
    key: str
    counter: int = 0
    context: aiocoap.Context | None = None
    sent: list[aiocoap.Message] = field(default_factory=list)

    async def _ctx(self) -> aiocoap.Context:
        if self.context is None:
            self.context = await aiocoap.Context.create_client_context()
        return self.context

    async def close(self) -> None:
        if self.context is not None:
            await self.context.shutdown()
            self.context = None

    def build(
        self,
        method: Code,
        path: str,
        payload: bytes = b"",
        fmt: Any = None,
        *,
        counter: int | None = None,
        timestamp: int | None = None,
        key: str | None = None,
        **opts: Any,
    ) -> aiocoap.Message:
        if counter is None:
            self.counter += 1
            counter = self.counter
        ts = int(time.time()) if timestamp is None else timestamp
        query = sign_query(key or self.key, str(method), path, self.device_id, ts, counter, payload)
        msg = aiocoap.Message(code=method, payload=payload, uri=f"coap://{self.host}:{self.port}/{path}", **opts)
        msg.opt.uri_query = tuple(query)
        if fmt is not None:
            msg.opt.content_format = fmt
        return msg

    async def send(self, msg: aiocoap.Message) -> CoapReply:
        self.sent.append(msg)
        resp = await (await self._ctx()).request(msg).response
        return CoapReply(resp.code, resp.payload, tuple(resp.opt.location_path))

    async def replay(self, msg: aiocoap.Message) -> CoapReply:
        """Send a byte-identical copy of an earlier request (what an eavesdropper would do)."""
        copy = aiocoap.Message(code=msg.code, payload=msg.payload, uri=f"coap://{self.host}:{self.port}/alert")
        copy.opt.uri_query = msg.opt.uri_query
        copy.opt.content_format = msg.opt.content_format
        return await self.send(copy)

    async def alert(
        self,
        kind: str,
        *,
        message_id: str | None = None,
        location: dict[str, float] | None = None,
        silent: bool = False,
        use_json: bool = False,
        **extra: Any,
    ) -> CoapReply:
        doc: dict[str, Any] = {"kind": kind, "silent": silent, "occurred_at": int(time.time()), **extra}
        if message_id:
            doc["message_id"] = message_id
        if location:
            doc["location"] = location
        if use_json:
            return await self.send(self.build(Code.POST, "alert", json.dumps(doc).encode(), ContentFormat.JSON))
        return await self.send(self.build(Code.POST, "alert", cbor2.dumps(doc), ContentFormat.CBOR))

    async def cancel(self, alert_id: str | None = None) -> CoapReply:
        doc: dict[str, Any] = {"cancel": True, **({"alert_id": alert_id} if alert_id else {})}
        return await self.send(self.build(Code.POST, "alert", cbor2.dumps(doc), ContentFormat.CBOR))

    async def observe(self, alert_id: str) -> AsyncIterator[dict[str, Any]]:
        """Yield the alert's status document: the current one, then one per change."""
        msg = self.build(Code.GET, f"alert/{alert_id}", observe=0)
        req = (await self._ctx()).request(msg)
        first = await req.response
        if not first.code.is_successful():
            raise RuntimeError(f"observe refused: {first.code} {first.payload!r}")
        yield cbor2.loads(first.payload)
        async for notification in req.observation:
            yield cbor2.loads(notification.payload)


@action("coap.alert")
async def _coap_alert(ctx: RunContext, step: Step) -> None:
    """A signed CoAP alert (CBOR). The device's scenario entry carries `credentials: {coap_hmac: KEY}`."""
    device_id = step.device or ""
    key = ctx.scratch.get(f"credential:{device_id}:coap_hmac")
    if key is None:
        raise KeyError(f"{device_id} has no coap_hmac credential in the scenario")
    args = dict(step.args)
    device = VirtualCoapDevice(ctx.settings.coap_host, ctx.settings.coap_port, device_id, key)
    try:
        reply = await device.alert(args.pop("kind", "sos"), **args)
    finally:
        await device.close()
    if not reply.code.is_successful():
        raise RuntimeError(f"CoAP alert refused: {reply.code} {reply.payload!r}")
