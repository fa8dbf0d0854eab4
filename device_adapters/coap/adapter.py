"""CoAP adapter (aiocoap): POST /alert, GET + Observe /alert/<id>, /.well-known/core.

Every request is authenticated per device: either OSCORE-protected with the device's security context
(oscore.py; the context's Recipient ID names the device, OSCORE's replay window refuses replays) or, for
devices without OSCORE, HMAC-signed in the query (auth.py). A confirmable POST is answered 2.01 Created
only after the ingress stored the alert (the device's profile decodes it, like every transport's frames);
a store failure answers 5.03 so the device tries again. 4.00 carries a diagnostic for malformed CBOR/JSON,
4.01 refuses bad credentials or a replay, 4.13 refuses requests over `MAX_PAYLOAD` bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import aiocoap
import aiocoap.resource as resource
import cbor2
from aiocoap import Code
from aiocoap.numbers import ContentFormat

from bridge.alerts.pipeline import device_state
from bridge.core.events import StatusEvent
from bridge.core.lifecycle import DEVICE_MESSAGES
from bridge.core.messages import MESSAGE_DELIVERY
from bridge.core.model import Alert, AlertKind, HistoryEntry, device_kind, utcnow
from bridge.devices.decoding import Frame
from bridge.infra.aio import stop_tasks
from bridge.ingress import Claim, Receipt
from bridge.ingress.transport import BaseAdapter
from device_adapters.coap.auth import AuthError, Signed, parse_query, verify
from device_adapters.coap.blockguard import BlockwiseGuard
from device_adapters.coap.oscore_on_demand import OscoreOnDemand, device_for
from device_adapters.coap.settings import CoapSettings

if TYPE_CHECKING:
    from bridge.app.config import Settings
    from bridge.ingress.transport import AdapterContext

log = logging.getLogger("sosbridge.coap")

TRANSPORT = "coap"
MAX_PAYLOAD = 1024
MAX_ASSEMBLIES = 256  # Block1 uploads in progress at once (each at most MAX_PAYLOAD bytes)
WINDOW_S = 300.0
CBOR, JSON, TEXT = ContentFormat.CBOR, ContentFormat.JSON, ContentFormat.TEXT


class CoapError(Exception):
    def __init__(self, code: Code, diagnostic: str, metric: str | None = None) -> None:
        super().__init__(diagnostic)
        self.code = code
        self.diagnostic = diagnostic
        self.metric = metric


def decode_payload(payload: bytes, content_format: Any) -> dict[str, Any]:
    """CBOR (60) or JSON (50); without a Content-Format, CBOR then JSON. Raises CoapError 4.00."""
    formats = [content_format] if content_format in (CBOR, JSON) else [CBOR, JSON]
    errors = []
    for fmt in formats:
        try:
            doc = cbor2.loads(payload) if fmt == CBOR else json.loads(payload)
        except (cbor2.CBORDecodeError, ValueError, UnicodeDecodeError, TypeError) as exc:
            errors.append(f"{'CBOR' if fmt == CBOR else 'JSON'}: {str(exc)[:80]}")
            continue
        if not isinstance(doc, dict):
            raise CoapError(Code.BAD_REQUEST, "the payload must be a map/object", "malformed")
        return doc
    raise CoapError(Code.BAD_REQUEST, "malformed payload; " + "; ".join(errors), "malformed")


def encode_body(doc: dict[str, Any], fmt: Any) -> tuple[bytes, Any]:
    if fmt == JSON:
        return json.dumps(doc).encode(), JSON
    return cbor2.dumps(doc), CBOR


def response(code: Code, doc: dict[str, Any] | None = None, fmt: Any = CBOR, **opts: Any) -> aiocoap.Message:
    if doc is None:
        return aiocoap.Message(code=code, **opts)
    payload, cf = encode_body(doc, fmt)
    return aiocoap.Message(code=code, payload=payload, content_format=cf, **opts)


def error_response(exc: CoapError) -> aiocoap.Message:
    msg = aiocoap.Message(code=exc.code, payload=exc.diagnostic.encode()[:200], content_format=TEXT)
    if exc.code == Code.REQUEST_ENTITY_TOO_LARGE:
        msg.opt.size1 = MAX_PAYLOAD
    return msg


class Authenticator:
    """Signature, clock window and a durable, strictly increasing counter per device."""

    def __init__(self, ctx: AdapterContext, window_s: float = WINDOW_S) -> None:
        self.ctx = ctx
        self.window_s = window_s
        self._locks: dict[str, asyncio.Lock] = {}

    async def check(self, request: aiocoap.Message, path: str, *, advance: bool = True) -> Signed:
        try:
            signed = parse_query(request.opt.uri_query)
            key = await self.ctx.store.get_credential(signed.device_id, "coap_hmac")
            if key is None:
                raise AuthError("unknown device or no CoAP key")
            verify(signed, key, str(request.code), path, request.payload, time.time(), self.window_s)
            if not advance:
                return signed
            lock = self._locks.setdefault(signed.device_id, asyncio.Lock())
            async with lock:
                last = await self.ctx.store.get_credential(signed.device_id, "coap_counter")
                if last is not None and signed.counter <= int(last):
                    raise AuthError("counter not greater than the last accepted one (replay)", "replay")
                # Advanced before submit: a retry after a failure must be signed afresh with a new counter.
                await self.ctx.store.set_credential(signed.device_id, "coap_counter", str(signed.counter), hashed=False)
            return signed
        except AuthError as exc:
            raise CoapError(Code.UNAUTHORIZED, str(exc), exc.code) from None

    async def identify(self, request: aiocoap.Message, path: str, *, advance: bool = True) -> str:
        """The authenticated device: from the OSCORE context that unprotected the request, else the HMAC."""
        device_id = device_for(request.remote)
        if device_id is not None:
            return device_id
        return (await self.check(request, path, advance=advance)).device_id


class AlertCollection(resource.Resource):
    """POST /alert"""

    rt = "sosbridge.alert"
    ct = f"{int(CBOR)} {int(JSON)}"

    def __init__(self, adapter: CoapAdapter) -> None:
        super().__init__()
        self.adapter = adapter

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            return await self._post(request)
        except CoapError as exc:
            if exc.metric:
                self.adapter.ctx.metrics.rejected(TRANSPORT, exc.metric)
            log.info("coap request refused", extra={"code": str(exc.code), "reason": exc.metric})
            return error_response(exc)

    async def _post(self, request: aiocoap.Message) -> aiocoap.Message:
        ctx = self.adapter.ctx
        if len(request.payload) > MAX_PAYLOAD:
            raise CoapError(Code.REQUEST_ENTITY_TOO_LARGE, f"payload over {MAX_PAYLOAD} bytes", "too_large")
        device_id = await self.adapter.auth.identify(request, "alert")
        fmt = request.opt.content_format
        doc = decode_payload(request.payload, fmt)
        # Content-Format is the transport's business: the profile's decoder always sees JSON.
        frame = Frame(payload=json.dumps(doc, default=str).encode(), meta={"path": "alert"})
        raw = request.payload.hex() if fmt != JSON else request.payload.decode("utf-8", "replace")
        overrides = {"alert_id": doc["alert_id"]} if isinstance(doc.get("alert_id"), str) else None
        auth = "oscore" if device_for(request.remote) is not None else "hmac"
        receipt = await ctx.ingress.receive(frame, Claim(TRANSPORT, device_id=device_id, auth=auth), raw=raw,
                                            overrides=overrides)
        return self.answer(await ctx.ingress.with_state(receipt), fmt)

    @staticmethod
    def answer(receipt: Receipt, fmt: Any) -> aiocoap.Message:
        """The Receipt as a CoAP response."""
        if receipt.status == "not_stored":
            return aiocoap.Message(code=Code.SERVICE_UNAVAILABLE, max_age=5, payload=b"not stored, retry")
        if receipt.status in ("refused", "unmatched"):
            code = {"unknown_device": Code.UNAUTHORIZED, "not_found": Code.NOT_FOUND,
                    "too_large": Code.REQUEST_ENTITY_TOO_LARGE}.get(receipt.code, Code.BAD_REQUEST)
            return error_response(CoapError(code, receipt.reason))
        last = receipt.last
        body = {
            "alert_id": last.alert_id if last else None,
            "outcome": last.outcome if last else receipt.status,
            "state": last.state.value if last and last.state else None,
        }
        if last is not None and last.outcome in ("created", "escalated", "duplicate") and last.alert_id:
            return response(Code.CREATED, body, fmt, location_path=("alert", last.alert_id))
        return response(Code.CHANGED, body, fmt)


class AlertStatus(resource.PathCapable, aiocoap.interfaces.ObservableResource):
    """GET (+ Observe) /alert/<id>: the alert's state, pushed to observers on every change."""

    def __init__(self, adapter: CoapAdapter) -> None:
        self.adapter = adapter
        self.observers: dict[str, set[Any]] = {}

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return True

    def get_resources_as_linkheader(self) -> Any:
        from aiocoap.util.linkformat import LinkFormat

        return LinkFormat([])

    async def _alert_for(self, request: aiocoap.Message, advance: bool) -> Alert:
        if request.code != Code.GET:
            raise CoapError(Code.METHOD_NOT_ALLOWED, "GET only")
        if len(request.opt.uri_path) != 1:
            raise CoapError(Code.NOT_FOUND, "no such resource")
        alert_id = request.opt.uri_path[0]
        device_id = await self.adapter.auth.identify(request, f"alert/{alert_id}", advance=advance)
        alert = await self.adapter.ctx.store.get_alert(alert_id)
        if alert is None or alert.device_id != device_id:
            raise CoapError(Code.NOT_FOUND, "alert not found")
        return alert

    async def add_observation(self, request: aiocoap.Message, serverobservation: Any) -> None:
        # Signature and clock only: render() checks the counter for the same request right after.
        try:
            alert = await self._alert_for(request, advance=False)
        except CoapError:
            return
        watchers = self.observers.setdefault(alert.alert_id, set())
        watchers.add(serverobservation)
        serverobservation.accept(lambda: watchers.discard(serverobservation))

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            alert = await self._alert_for(request, advance=True)
        except CoapError as exc:
            if exc.metric:
                self.adapter.ctx.metrics.rejected(TRANSPORT, exc.metric)
            return error_response(exc)
        state = device_state(alert)  # a held cancel (duress) reads as cancelled here too
        return self.status_message(alert.alert_id, state.value, device_kind(alert.kind), request.opt.accept)

    @staticmethod
    def status_message(alert_id: str, state: str, kind: str | None, fmt: Any) -> aiocoap.Message:
        from bridge.core.lifecycle import DEVICE_MESSAGES
        from bridge.core.model import AlertState

        body = {"alert_id": alert_id, "state": state, "kind": kind, "message": DEVICE_MESSAGES[AlertState(state)]}
        return response(Code.CONTENT, body, JSON if fmt == JSON else CBOR)

    async def notify_text(self, ev: StatusEvent) -> None:
        """A platform message to the alert's observers: the status document plus `text_message`; its
        delivery is recorded when at least one observer was notified."""
        watchers = list(self.observers.get(ev.alert_id, ()))
        alert = await self.adapter.ctx.store.get_alert(ev.alert_id) if watchers else None
        if alert is None or ev.text is None:
            return
        state = device_state(alert)  # a held cancel (duress) still reads as cancelled
        body = {"alert_id": alert.alert_id, "state": state.value, "kind": device_kind(alert.kind),
                "message": DEVICE_MESSAGES[state], "text_message": ev.text.body(alert.alert_id)}
        for obs in watchers:
            obs.trigger(response(Code.CONTENT, body, CBOR))
        entry = HistoryEntry(at=utcnow(), event=MESSAGE_DELIVERY, state=alert.state,
                             detail={"message_id": ev.text.message_id, "channel": "coap", "status": "sent"})
        await self.adapter.ctx.store.append_history(alert.alert_id, [entry])

    def notify(self, alert_id: str, state: str, kind: str | None) -> None:
        for obs in list(self.observers.get(alert_id, ())):
            obs.trigger(self.status_message(alert_id, state, kind, CBOR))


class CoapAdapter(BaseAdapter):
    name = "coap"
    transports = {"coap": frozenset({"coap_response"})}

    def __init__(self) -> None:
        self.context: aiocoap.Context | None = None
        self._bus_task: asyncio.Task[None] | None = None
        self.status: AlertStatus | None = None
        self.oscore: OscoreOnDemand | None = None

    def enabled(self, settings: Settings) -> bool:
        return settings.section(CoapSettings).enabled

    def build_site(self) -> resource.Site:
        site = resource.Site()
        self.status = AlertStatus(self)
        site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
        site.add_resource(["alert"], AlertCollection(self))
        site.add_resource(["alert"], self.status)
        return site

    async def start(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        self.auth = Authenticator(ctx)
        refused = lambda reason: ctx.metrics.rejected(TRANSPORT, reason)  # noqa: E731
        self.oscore = OscoreOnDemand(self.build_site(), ctx.store, ctx.settings.data_path / "oscore", refused)
        site = BlockwiseGuard(self.oscore, MAX_PAYLOAD, MAX_ASSEMBLIES, refused)
        own = ctx.settings.section(CoapSettings)
        host, port = own.host, own.port
        # UDP only: aiocoap's defaults would also open CoAP-over-TCP and WebSocket listeners (5683/tcp,
        # 8683/tcp) that no device here uses and that collide between bridges on one host.
        self.context = await aiocoap.Context.create_server_context(site, bind=(host, port), transports=["udp6"])
        self._bus_task = asyncio.create_task(self._follow_bus(), name="coap-observe")
        log.info("coap listening", extra={"host": host, "port": port})

    async def _follow_bus(self) -> None:
        async with self.ctx.bus.subscribe() as q:
            while True:
                ev = await q.get()  # a service loop's wait: stop() cancels it
                if self.status is None:
                    continue
                if ev.text is not None:
                    try:
                        await self.status.notify_text(ev)
                    except Exception:  # a store hiccup must not stop the observers
                        log.exception("coap message notification failed", extra={"alert_id": ev.alert_id})
                    continue
                self.status.notify(ev.alert_id, ev.state.value,
                                   device_kind(AlertKind(ev.kind)) if ev.kind else None)

    async def stop(self) -> None:
        if self._bus_task is not None:
            await stop_tasks([self._bus_task])
        if self.context is not None:
            await self.context.shutdown()
            self.context = None
        if self.oscore is not None:
            # Writes each context's exact sequence number and replay window, so replays stay refused
            # after a restart without the Echo round trip.
            self.oscore.close()
            self.oscore = None
