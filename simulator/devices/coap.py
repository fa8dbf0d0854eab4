"""A virtual constrained device speaking the bridge's CoAP API: POST /alert and Observe, either
HMAC-signed (query options) or OSCORE-protected (RFC 8613, client-side aiocoap security context)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
from aiocoap import Code
from aiocoap.numbers import ContentFormat

from device_adapters.coap.auth import sign_query
from device_adapters.coap.oscore import DeviceSecurityContext, OscoreMaterial, write_context_dir
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
    key: str = ""
    counter: int = 0
    context: aiocoap.Context | None = None
    sent: list[aiocoap.Message] = field(default_factory=list)
    # OSCORE: the material as registered on the bridge (bridge's view; swapped here) and a directory for the
    # device's own context, whose sequence number must persist between runs just like on a real device.
    oscore: OscoreMaterial | None = None
    oscore_dir: Path | None = None
    security_context: DeviceSecurityContext | None = None

    def _oscore_context(self) -> DeviceSecurityContext:
        if self.security_context is None:
            assert self.oscore is not None
            if self.oscore_dir is None:
                self.oscore_dir = Path(tempfile.mkdtemp(prefix=f"oscore-{self.device_id}-"))
            write_context_dir(self.oscore_dir, self.oscore.reversed())
            self.security_context = DeviceSecurityContext(str(self.oscore_dir), self.device_id, "")
        return self.security_context

    async def _ctx(self) -> aiocoap.Context:
        if self.context is None:
            self.context = await aiocoap.Context.create_client_context()
            if self.oscore is not None:
                # Every request to the bridge's origin goes through the OSCORE transport.
                self.context.client_credentials[f"coap://{self.host}:{self.port}/*"] = self._oscore_context()
        return self.context

    async def close(self) -> None:
        if self.context is not None:
            await self.context.shutdown()
            self.context = None
        if self.security_context is not None:
            self.security_context.close()  # persists the sequence number, releases the lock
            self.security_context = None

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
        msg = aiocoap.Message(code=method, payload=payload, uri=f"coap://{self.host}:{self.port}/{path}", **opts)
        if self.oscore is None or key is not None:
            # HMAC-signed; an OSCORE device needs no query (the security context authenticates it).
            if counter is None:
                self.counter += 1
                counter = self.counter
            ts = int(time.time()) if timestamp is None else timestamp
            query = sign_query(key or self.key, str(method), path, self.device_id, ts, counter, payload)
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


def _scenario_device(ctx: RunContext, device_id: str, use_oscore: bool) -> VirtualCoapDevice:
    host, port = ctx.settings.coap_host, ctx.settings.coap_port
    if not use_oscore:
        key = ctx.scratch.get(f"credential:{device_id}:coap_hmac")
        if key is None:
            raise KeyError(f"{device_id} has no coap_hmac credential in the scenario")
        return VirtualCoapDevice(host, port, device_id, key)
    raw = ctx.scratch.get(f"credential:{device_id}:oscore")
    if raw is None:
        raise KeyError(f"{device_id} has no oscore credential in the scenario")
    material = OscoreMaterial.model_validate_json(raw) if isinstance(raw, str) else OscoreMaterial.model_validate(raw)
    # One context directory per device for the whole run: its sequence number must keep rising.
    oscore_dir = ctx.scratch.setdefault(
        f"oscore-dir:{device_id}", Path(tempfile.mkdtemp(prefix=f"sim-oscore-{device_id}-"))
    )
    return VirtualCoapDevice(host, port, device_id, oscore=material, oscore_dir=oscore_dir)


@action("coap.alert")
async def _coap_alert(ctx: RunContext, step: Step) -> None:
    """A CoAP alert (CBOR), HMAC-signed with `credentials: {coap_hmac: KEY}`, or with `oscore: true` in the
    step's args OSCORE-protected with `credentials: {oscore: '<json>'}` (and `identifiers: {oscore_kid: ..}`)."""
    device_id = step.device or ""
    args = dict(step.args)
    device = _scenario_device(ctx, device_id, bool(args.pop("oscore", False)))
    try:
        reply = await device.alert(args.pop("kind", "sos"), **args)
    finally:
        await device.close()
    if not reply.code.is_successful():
        raise RuntimeError(f"CoAP alert refused: {reply.code} {reply.payload!r}")
