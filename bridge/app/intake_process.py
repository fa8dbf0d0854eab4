"""An intake process (`python -m bridge.app.intake_process FD PARENT_PID`), started by `sosbridge serve`
when `SOSBRIDGE_INTAKE_WORKERS` is set (bridge/app/intake.py).

It builds the store (Redis), the profiles, the ledger, the pipeline and an ingress from the settings and
the main process's routes in its hello, says READY, then runs each sender's requests through its ingress
one after another, in the order they came, and answers with the Receipts (a backlog sent behind one that
was not stored is refused until the retry of that one comes). Its status events go to the parent as they
are published, before the answer of the frame that caused them; its counters' increments follow at most
every `COUNTS_EVERY_S`. It has no transports,
forwarder, timers or HTTP. When its channel closes (the parent stopped it, or died) it cancels what still
runs (the parent has not acknowledged those frames: the broker or device sends them again), closes the
store and exits. See docs/architecture.md#intake-on-more-than-one-core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.alerts.emergency_contacts import SmsGateway
from bridge.alerts.pipeline import Pipeline
from bridge.app.child_processes import die_with_parent
from bridge.app.config import Settings
from bridge.app.intake import build_pipeline, sinks_with_notify
from bridge.core.events import StatusBus, StatusEvent
from bridge.delivery.routing import RoutingTable
from bridge.devices.profiles import ProfileRegistry
from bridge.infra.aio import stop_tasks, wait_event
from bridge.infra.channel import READY, FramedProtocol, pack, unpack
from bridge.infra.metrics import Metrics
from bridge.ingress import Ingress
from bridge.ingress.receipt import Receipt
from bridge.ingress.wire import (
    ANSWER,
    BATCH,
    COUNTS,
    FORGET,
    RECEIVE,
    claim_from,
    event_fields,
    frame_from,
    receipt_fields,
    request_key,
)
from bridge.store import Store, make_store

log = logging.getLogger("sosbridge.intake")

COUNTS_EVERY_S = 0.1
NOT_STORED_BEHIND = Receipt("not_stored", "not_stored",
                            "not stored: the frames before it were not; send it again after them")


class ChannelBus(StatusBus):
    """Status events go to the parent, in the order they happen (the parent's bus publishes them)."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        super().__init__()
        self._send = send

    def publish(self, event: StatusEvent) -> None:
        self._send(pack(event_fields(event)))


@dataclass
class Stack:
    store: Store
    pipeline: Pipeline
    ingress: Ingress
    metrics: Metrics


async def build(settings: Settings, routes: RoutingTable, sms_declared: int, send: Callable[[bytes], None]) -> Stack:
    store = make_store(settings)
    await store.open()
    metrics = Metrics()
    bus = ChannelBus(send)
    profiles = ProfileRegistry.load(settings.profile_dirs.split(os.pathsep) if settings.profile_dirs else [])
    gateway = SmsGateway()
    for _ in range(sms_declared):
        gateway.declare()
    sinks, channels = sinks_with_notify(settings, routes, gateway)  # they render bodies here; nothing is sent
    _, pipeline = build_pipeline(settings, store, bus, metrics, profiles, routes, sinks.primary, channels, gateway,
                                 fresh=None)
    ingress = Ingress(store, pipeline, profiles, metrics, max_frame_bytes=settings.max_body_bytes,
                      device_cache_s=settings.device_cache_s)
    return Stack(store, pipeline, ingress, metrics)


class IntakeEnd(FramedProtocol):
    peer = "the main process"

    def __init__(self) -> None:
        super().__init__()
        self.stack: Stack | None = None
        self.setup: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self._sent: dict[tuple[str, tuple[str, ...]], float] = {}
        # Per sender: its last request's end, so its requests are stored one after another in the order
        # they came (a backlog may come before the one ahead of it is answered: Ingress.send_ahead).
        self._last: dict[str, asyncio.Future[None]] = {}
        # Senders whose last request was not stored entirely: a backlog sent behind it is refused until
        # the parent has retried (its retry is not sent behind anything), so no frame overtakes one not stored.
        self._unstored: set[str] = set()

    def frame_received(self, body: bytes) -> None:
        if self.setup is None:
            settings, routes, sms_declared = pickle.loads(body)  # the parent's own socketpair: no one else has it
            self.setup = asyncio.create_task(self._start(settings, routes, sms_declared))
            return
        req_id, method, args = unpack(body)
        if method == FORGET:
            if self.stack is not None:
                self.stack.ingress.registry_changed()
            return
        key = request_key(method, args)
        previous = self._last.get(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[key] = done
        task = asyncio.create_task(self._serve_in_turn(req_id, method, args, key, previous, done))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve_in_turn(self, req_id: int, method: int, args: tuple[Any, ...], key: str,
                             previous: asyncio.Future[None] | None, done: asyncio.Future[None]) -> None:
        try:
            if previous is not None:
                await previous
            if method == BATCH and args[3] and key in self._unstored:
                # Sent behind a request that was not stored: answered not stored, never stored ahead of it.
                self.send_raw(pack((ANSWER, req_id, [receipt_fields(NOT_STORED_BEHIND)] * len(args[0]))))
                return
            if await self._serve(req_id, method, args):
                self._unstored.discard(key)
            else:
                self._unstored.add(key)
        finally:
            done.set_result(None)
            if self._last.get(key) is done:
                del self._last[key]

    async def _start(self, settings: Settings, routes: RoutingTable, sms_declared: int) -> None:
        from bridge.infra.logs import configure_logging

        configure_logging(settings.log_level)
        try:
            self.stack = await build(settings, routes, sms_declared, self.send_raw)
        except Exception as exc:  # a store that cannot be reached: exit, and the parent starts another
            log.error("intake process could not start", extra={"error": repr(exc)})
            self.close()
            return
        self.send_raw(pack(READY))
        log.info("intake process ready", extra={"pid": os.getpid()})

    async def _serve(self, req_id: int, method: int, args: tuple[Any, ...]) -> bool:
        """Answer one request; True when every frame of it was stored (or answered for good)."""
        assert self.stack is not None, "requests come after READY"
        ingress = self.stack.ingress
        receipts: list[Receipt]
        try:
            if method == RECEIVE:
                frame, claim, raw, overrides, ref_scheme, repeats_answered = args
                receipts = [await ingress.receive(frame_from(frame), claim_from(claim), raw=raw, overrides=overrides,
                                                  ref_scheme=ref_scheme, repeats_answered=repeats_answered)]
            elif method == BATCH:
                frames, ref_scheme, repeats_answered, _after_previous = args
                receipts = await ingress.receive_batch(
                    [(frame_from(f), claim_from(c), raw) for f, c, raw in frames], ref_scheme=ref_scheme,
                    repeats_answered=repeats_answered)
            else:
                raise ValueError(f"unknown request {method!r}")
        except Exception as exc:  # a bug: nothing may be acknowledged that was not stored
            log.error("intake request failed; not stored", extra={"error": repr(exc)}, exc_info=True)
            count = len(args[0]) if method == BATCH else 1
            receipts = [Receipt("not_stored", "not_stored", "not stored: an error in the intake process")] * count
        dumped: dict[int, str] = {}  # the receipts are alive until sent: their devices' ids stay theirs
        self.send_raw(pack((ANSWER, req_id, [receipt_fields(r, dumped) for r in receipts])))
        return all(r.acknowledge for r in receipts)

    def send_counts(self) -> None:
        if self.stack is None:
            return
        totals = self.stack.metrics.counter_totals()
        counts = [(name, labels, value - self._sent.get((name, labels), 0.0))
                  for (name, labels), value in totals.items() if value != self._sent.get((name, labels), 0.0)]
        if counts:
            self._sent = totals
            self.send_raw(pack((COUNTS, counts)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    _, end = await loop.create_connection(IntakeEnd, sock=sock)
    while not await wait_event(end.closed, COUNTS_EVERY_S):
        end.send_counts()
    await stop_tasks([*end.tasks, *([end.setup] if end.setup is not None else [])])
    if end.stack is not None:
        with contextlib.suppress(Exception):
            await end.stack.pipeline.stop()
        with contextlib.suppress(Exception):
            await end.stack.store.close()


def main(argv: list[str]) -> int:
    fd, parent_pid = int(argv[0]), int(argv[1])
    die_with_parent(parent_pid)
    asyncio.run(serve(socket.socket(fileno=fd)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
