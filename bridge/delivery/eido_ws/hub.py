"""Subscriptions, incidents and acknowledgements of the EIDO notifier (NENA-STA-024.1a §2.5).

A `new` subscription gets every active incident at once (or one empty event) and every event after; a
`single` one gets one incident, accepted up to 5 minutes after it closed. `publish` sends an event to each
matching subscription and resolves when one acknowledges it with 200, resending the same event (same
transactionId) every `redeliver_s` until then. Empty events are sent as keep-alives when nothing went
for `minRate` seconds. A subscription ends on unsubscribe, expiry or its socket closing (then silently);
a socket whose last subscription expired is closed. The bridge never holds an event back, so it grants
`maxRate` 0 whatever was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.delivery.eido_ws import messages as m
from bridge.infra.aio import stop_tasks

log = logging.getLogger("sosbridge.eido_ws")

EIDO_MEDIA_TYPE = "application/emergency.eido+json"
MAX_EXPIRES_S = 3600
DEFAULT_MIN_RATE_S = 30
SINGLE_AFTER_CLOSE_S = 300


class Peer:
    """One subscriber socket: how to send to it and close it (the server supplies both)."""

    def __init__(self, send: Callable[[str], Awaitable[None]], close: Callable[[], Awaitable[None]],
                 name: str = "") -> None:
        self._send = send
        self._close = close
        self.name = name
        self.subscriptions: set[str] = set()
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            await self._send(json.dumps(message, separators=(",", ":")))

    async def close(self) -> None:
        await self._close()


@dataclass
class Subscription:
    sid: str
    peer: Peer
    sub_type: str  # "new" | "single"
    incident: str | None
    min_rate_s: int
    expires_at: float
    last_sent: float = field(default_factory=time.monotonic)


@dataclass
class Incident:
    key: str  # the alert id
    reference_id: str  # the EIDO's $id
    doc: dict[str, Any]
    closed_at: float | None = None


class Hub:
    def __init__(self, redeliver_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.redeliver_s = redeliver_s
        self.clock = clock
        self.subscriptions: dict[str, Subscription] = {}
        self.incidents: dict[str, Incident] = {}
        self._acks: dict[str, asyncio.Future[int]] = {}
        self._task: asyncio.Task[None] | None = None
        self.stopping = False

    # -- incidents --------------------------------------------------------------------------------------
    def record(self, key: str, doc: dict[str, Any], closed: bool) -> Incident:
        inc = self.incidents.get(key)
        if inc is None:
            inc = self.incidents[key] = Incident(key, str(doc.get("$id", key)), doc)
        inc.doc = doc
        inc.closed_at = self.clock() if closed else None
        return inc

    def find(self, reference: str) -> Incident | None:
        """By alert id or by the EIDO's $id (an incident URN)."""
        return self.incidents.get(reference) or next(
            (i for i in self.incidents.values() if i.reference_id == reference), None)

    def _gone(self, inc: Incident) -> bool:
        return inc.closed_at is not None and self.clock() - inc.closed_at > SINGLE_AFTER_CLOSE_S

    # -- subscriber messages ----------------------------------------------------------------------------
    async def handle(self, peer: Peer, text: str | bytes) -> None:
        try:
            name, body = m.read(text)
        except m.Unreadable as exc:
            log.info("unreadable subscriber message", extra={"peer": peer.name, "error": str(exc)})
            if str(exc) == "too large":
                await peer.send(m.subscribe_response("", 413, "Request too large"))
            else:
                await peer.send(m.not_implemented(exc.request_id))
            return
        errors = m.schema_errors(name, {name: body})
        if name == "subscribe":
            await self._subscribe(peer, body, errors)
        elif name == "unsubscribe":
            await self._unsubscribe(peer, body, errors)
        elif name == "eventResponse" and not errors:
            fut = self._acks.get(body["transactionId"])
            if fut is not None and not fut.done():
                fut.set_result(int(body["statusCode"]))
        # terminateResponse: nothing to do, the subscription is already gone.

    async def _subscribe(self, peer: Peer, body: dict[str, Any], errors: list[str]) -> None:
        rid = body.get("requestId", "") if isinstance(body.get("requestId"), str) else ""
        if errors:
            await peer.send(m.subscribe_response(rid, 400, "; ".join(errors)[:200]))
            return
        if self.stopping:
            await peer.send(m.subscribe_response(rid, 503, "Notifier is shutting down"))
            return
        expires = min(int(body.get("expires", MAX_EXPIRES_S)), MAX_EXPIRES_S)
        if body.get("subscriptionId"):  # renewal
            sub = self.subscriptions.get(body["subscriptionId"])
            if sub is None or sub.peer is not peer:
                await peer.send(m.subscribe_response(rid, 481, "Subscription does not exist"))
                return
            sub.expires_at = self.clock() + expires
            await peer.send(m.subscribe_response(rid, 200, "OK", subscriptionId=sub.sid, minRate=sub.min_rate_s,
                                                 maxRate=0, expires=expires))
            return
        if body.get("requestType") != "EIDO":
            await peer.send(m.subscribe_response(rid, 400, "requestType EIDO is required for a new subscription"))
            return
        sub_type = body.get("requestSubType", "new")
        accepts = body.get("requestAccepts")
        if accepts and EIDO_MEDIA_TYPE not in accepts.lower():
            await peer.send(m.subscribe_response(rid, 406, f"Only {EIDO_MEDIA_TYPE} is offered"))
            return
        if sub_type == "resource" or body.get("qualFilter"):
            await peer.send(m.subscribe_response(rid, 400, "resource subscriptions and qualFilter are not supported"))
            return
        incident = body.get("incidentId")
        if sub_type == "single":
            inc = self.find(incident) if incident else None
            if inc is None or self._gone(inc):
                await peer.send(m.subscribe_response(rid, 404, "No such incident"))
                return
            incident = inc.key
        elif incident:
            await peer.send(m.subscribe_response(rid, 400, "incidentId goes with requestSubType single"))
            return
        min_rate = max(1, int(body.get("minRate", DEFAULT_MIN_RATE_S)))
        sub = Subscription(str(uuid.uuid4()), peer, sub_type, incident, min_rate, self.clock() + expires)
        self.subscriptions[sub.sid] = sub
        peer.subscriptions.add(sub.sid)
        await peer.send(m.subscribe_response(rid, 200, "OK", subscriptionId=sub.sid, minRate=min_rate, maxRate=0,
                                             expires=expires))
        log.info("EIDO subscription", extra={"peer": peer.name, "subscription": sub.sid, "type": sub_type})
        if sub_type == "single":
            docs = [self.incidents[incident].doc] if incident else []
        else:
            docs = [i.doc for i in self.incidents.values() if i.closed_at is None]
        await self._send_event(sub, docs)

    async def _unsubscribe(self, peer: Peer, body: dict[str, Any], errors: list[str]) -> None:
        rid = body.get("requestId", "") if isinstance(body.get("requestId"), str) else ""
        sid = body.get("subscriptionId", "") if isinstance(body.get("subscriptionId"), str) else ""
        if errors:
            await peer.send(m.unsubscribe_response(rid, sid, 400, "; ".join(errors)[:200]))
            return
        sub = self.subscriptions.get(sid)
        if sub is None or sub.peer is not peer:
            await peer.send(m.unsubscribe_response(rid, sid, 481, "Subscription does not exist"))
            return
        self._drop(sub)
        await peer.send(m.unsubscribe_response(rid, sid, 200, "OK"))

    def _drop(self, sub: Subscription) -> None:
        self.subscriptions.pop(sub.sid, None)
        sub.peer.subscriptions.discard(sub.sid)

    def closed(self, peer: Peer) -> None:
        """The socket closed: its subscriptions go, without notice."""
        for sid in list(peer.subscriptions):
            sub = self.subscriptions.get(sid)
            if sub is not None:
                self._drop(sub)

    # -- events -----------------------------------------------------------------------------------------
    async def _send_event(self, sub: Subscription, docs: list[dict[str, Any]],
                          transaction_id: str | None = None) -> str:
        tid = transaction_id or str(uuid.uuid4())
        sub.last_sent = self.clock()
        with contextlib.suppress(Exception):  # a dead socket is noticed by its reader, which drops it
            await sub.peer.send(m.event(sub.sid, tid, docs))
        return tid

    def _targets(self, key: str) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.sub_type == "new" or s.incident == key]

    async def publish(self, key: str, doc: dict[str, Any], closed: bool, timeout_s: float) -> int:
        """Record the incident and notify; the number of subscriptions that acknowledged with 200
        within `timeout_s` (0 when nobody is subscribed or nobody answered)."""
        self.record(key, doc, closed)
        targets = self._targets(key)
        if not targets:
            return 0
        loop = asyncio.get_running_loop()
        pending: dict[str, tuple[Subscription, asyncio.Future[int]]] = {}
        for sub in targets:
            tid = str(uuid.uuid4())
            fut: asyncio.Future[int] = loop.create_future()
            self._acks[tid] = fut
            pending[tid] = (sub, fut)
        created = list(pending)
        acked = 0
        try:
            async with asyncio.timeout(timeout_s):
                while pending:
                    for tid, (sub, _) in pending.items():
                        if sub.sid in self.subscriptions:
                            await self._send_event(sub, [doc], tid)
                    done, _ = await asyncio.wait({f for _, f in pending.values()}, timeout=self.redeliver_s,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    for tid in [t for t, (_, f) in pending.items() if f in done]:
                        _, fut = pending.pop(tid)
                        if fut.result() == 200:
                            acked += 1
                    if acked:
                        break
                    if not any(s.sid in self.subscriptions for s, _ in pending.values()):
                        break
        except TimeoutError:
            pass
        finally:
            for tid in created:
                self._acks.pop(tid, None)
        if closed:
            for sub in [s for s in targets if s.sub_type == "single"]:
                self._drop(sub)  # one EIDO for a closed incident, then nothing
        return acked

    # -- time: keep-alives and expiry -------------------------------------------------------------------
    async def tick(self) -> None:
        now = self.clock()
        for sub in list(self.subscriptions.values()):
            if now >= sub.expires_at:
                self._drop(sub)
                if not sub.peer.subscriptions:
                    with contextlib.suppress(Exception):
                        await sub.peer.close()
            elif now - sub.last_sent >= sub.min_rate_s:
                await self._send_event(sub, [])

    async def _run(self) -> None:
        while True:  # a service loop: stop() cancels it
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                await self.tick()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="eido-hub")

    async def stop(self) -> None:
        """Terminate every subscription (the subscriber answers terminateResponse, or not)."""
        self.stopping = True
        if self._task is not None:
            await stop_tasks([self._task])
        for sub in list(self.subscriptions.values()):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await sub.peer.send(m.terminate(str(uuid.uuid4()), sub.sid))
            self._drop(sub)
