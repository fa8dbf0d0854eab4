"""Intake processes: `SOSBRIDGE_INTAKE_WORKERS=N` (with the Redis store) runs the ingress and the pipeline
of every frame in N processes beside `sosbridge serve`, so intake uses more than one core (issue 27).

The main process keeps the transports (reading, fair turns, repeats, acknowledging, answering), the
status publisher, the forwarder, timers and the HTTP API. `DispatchingIngress.receive` and
`receive_batch` send each frame to the intake process its sender hashes to (`dispatch_key`: one sender,
one process, so its order, lane, edges and repeats stay in one place) and await its Receipt; the
process identifies, decodes, admits and commits to Redis itself, as another instance would. Its status
events come back before its answer: the parent publishes them on its bus and wakes its forwarder, then
acknowledges the frame. A process that dies answers nothing: its frames come back `not_stored`, so the
transport keeps them unacknowledged and retries (the dedupe keys make that at least once), and the
process is started again; one that has not answered within `SOSBRIDGE_INTAKE_ANSWER_TIMEOUT_S` is ended
and treated the same. Other ingress calls (texts, platform-side observations, supervision) stay in the
main process, on the same store. docs/architecture.md#intake-on-more-than-one-core.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import zlib
from collections.abc import Callable
from typing import Any

from bridge.alerts.emergency_contacts import Notifier, SmsGateway
from bridge.alerts.handoff import FreshContacts
from bridge.alerts.ledger import Ledger
from bridge.alerts.message_rate import MessageRate
from bridge.alerts.pipeline import Pipeline
from bridge.app.child_processes import ChildProcesses
from bridge.app.config import Settings
from bridge.app.delivery_sinks import Sinks, build_sinks
from bridge.core.contact import Contact
from bridge.core.events import StatusBus
from bridge.delivery.queued_bodies import QueuedBodies
from bridge.delivery.routing import RoutingTable
from bridge.delivery.sinks.base import Sink
from bridge.delivery.sinks.notify import notification_sinks
from bridge.devices.frames import Frame
from bridge.devices.profiles import ProfileRegistry
from bridge.infra.aio import wait_event
from bridge.infra.channel import ParentEnd, frame, pack
from bridge.infra.metrics import Metrics
from bridge.infra.ratelimit import TokenBuckets
from bridge.ingress import Ingress
from bridge.ingress.binding import Claim
from bridge.ingress.ingress import SentAhead
from bridge.ingress.receipt import Receipt
from bridge.ingress.wire import (
    ANSWER,
    COUNTS,
    EVENT,
    FORGET,
    BatchFrames,
    Reader,
    batch_request,
    dispatch_key,
    receive_request,
)
from bridge.store import Store

log = logging.getLogger("sosbridge.intake")

ALARM = "intake_process_exited"
MODULE = "bridge.app.intake_process"
# How long a frame waits for its intake process to be up (starting, or started again after it died)
# before it is answered not_stored: the transport keeps it unacknowledged and tries again.
WAIT_FOR_PROCESS_S = 10.0
GONE = "the intake process ended before it answered; not stored, try again"


def sinks_with_notify(settings: Settings, routes: RoutingTable, gateway: SmsGateway) -> tuple[Sinks, list[str]]:
    """Every route's sinks plus the person's own emergency contacts' (their channels: SMS is offered once
    the serial adapter declares a GSM port on `gateway`), and the channels configured."""
    sinks = build_sinks(settings, routes)
    notify = notification_sinks(settings, gateway)
    sinks.primary.update(notify)
    return sinks, [family.split(":", 1)[1] for family in notify if family != "notify:sms"]


def build_pipeline(settings: Settings, store: Store, bus: StatusBus, metrics: Metrics, profiles: ProfileRegistry,
                   routes: RoutingTable, sinks: dict[str, Sink], channels: list[str], gateway: SmsGateway,
                   fresh: FreshContacts | None) -> tuple[Ledger, Pipeline]:
    """The ledger and the pipeline, as the main process and each intake process build them. `sinks`
    render bodies when a contact is queued; `fresh`: the main process's in-memory hand-over of new alerts'
    first contacts to its forwarder (None in an intake process: they wait in the store, leased there)."""

    def select_routes(contact: Contact, previous: list[str]) -> list[str]:
        return [route.name for route in routes.select(contact, previous)]

    ledger = Ledger(store, bus, fresh=fresh,
                    notifier=Notifier(channels, settings.notify_map_url, sms=gateway),
                    render_bodies=QueuedBodies(sinks))
    pipeline = Pipeline(
        store,
        bus,
        metrics,
        public_url=settings.effective_public_url,
        default_status=settings.default_status,
        last_known_max_age_s=settings.last_known_max_age_s,
        kind_policy=profiles.allowed_kinds,
        route_selector=select_routes,
        update_limiter=TokenBuckets(settings.device_update_burst, settings.device_update_per_min / 60),
        ledger=ledger,
        message_rate=MessageRate(settings.device_message_burst, settings.device_message_per_min),
    )
    return ledger, pipeline


class IntakeLink(ParentEnd):
    """One intake process's socket: requests out; answers, status events and counts in."""

    peer = "an intake process"

    def __init__(self, index: int, links: IntakeLinks) -> None:
        super().__init__()
        self.index = index
        self.links = links
        self.pending: dict[int, asyncio.Future[list[Receipt] | None]] = {}

    def submit(self, req_id: int, request: bytes) -> asyncio.Future[list[Receipt] | None]:
        """Send one request (packed, `req_id` its first field) now; the future gets its Receipts, or None:
        the process ended before it answered, or did not answer in time and is ended now (its supervisor
        starts another)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Receipt] | None] = loop.create_future()
        self.pending[req_id] = future
        self.send_raw(request)
        # A timer handle, not wait_for(shield(...)): that cost the main process 9 µs more per request.
        overdue = loop.call_later(self.links.answer_timeout_s, self._overdue, req_id)

        def answered(_: asyncio.Future[list[Receipt] | None]) -> None:
            overdue.cancel()
            self.pending.pop(req_id, None)

        future.add_done_callback(answered)
        return future

    async def ask(self, req_id: int, request: bytes) -> list[Receipt] | None:
        return await self.submit(req_id, request)

    def _overdue(self, req_id: int) -> None:
        """Hung (stopped, deadlocked, stuck on a store that never answers): the frames it holds would never
        be acknowledged nor retried. Closing the channel answers them all not_stored (`channel_lost`), and
        the supervisor kills the process if it does not exit on EOF (bridge/app/child_processes.py)."""
        if req_id in self.pending:
            log.error("intake process did not answer in time; ending it",
                      extra={"index": self.index, "timeout_s": self.links.answer_timeout_s})
            self.close()

    def became_ready(self) -> None:
        self.links.ready(self)

    def message_received(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == EVENT:
            self.links.bus.publish(self.links.reader.event(message[1]))
            self.links.wake()
        elif kind == ANSWER:
            receipts = [self.links.reader.receipt(fields) for fields in message[2]]
            if any(r.stored for r in receipts):
                self.links.wake()  # an update or a location may have queued a contact without an event
            future = self.pending.pop(message[1], None)
            if future is not None and not future.done():
                future.set_result(receipts)
        elif kind == COUNTS:
            self.links.metrics.add_counts(message[1])
        else:
            raise ValueError(f"unknown message kind {kind!r}")

    def channel_lost(self) -> None:
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(None)
        self.links.lost(self)


class IntakeLinks:
    """The intake processes by index, each up or not; a sender always goes to the same index."""

    def __init__(self, count: int, bus: StatusBus, metrics: Metrics, profiles: ProfileRegistry,
                 wake: Callable[[], None], answer_timeout_s: float = 60.0) -> None:
        self.count = count
        self.answer_timeout_s = answer_timeout_s
        self.bus = bus
        self.metrics = metrics
        self.reader = Reader(profiles.get)
        self.wake = wake
        self.up: list[IntakeLink | None] = [None] * count
        self.up_events = [asyncio.Event() for _ in range(count)]
        self.any_ready = asyncio.Event()
        self._ids = itertools.count(1)

    def request(self, request: tuple[Any, ...]) -> tuple[int, bytes]:
        """A request packed with an id of its own. ValueError: something in it that marshal cannot carry."""
        req_id = next(self._ids)
        return req_id, pack((req_id, *request))

    def link(self, index: int) -> IntakeLink:
        return IntakeLink(index, self)

    def ready(self, link: IntakeLink) -> None:
        self.up[link.index] = link
        self.up_events[link.index].set()
        self.any_ready.set()

    def lost(self, link: IntakeLink) -> None:
        if self.up[link.index] is link:
            self.up[link.index] = None
            self.up_events[link.index].clear()
        if not any(self.up):
            self.any_ready.clear()

    def index(self, key: str) -> int:
        """The process a sender always goes to."""
        return zlib.crc32(key.encode()) % self.count

    async def ask(self, key: str, req_id: int, request: bytes) -> list[Receipt] | None:
        index = self.index(key)
        link = self.up[index]
        if link is None:
            if not await wait_event(self.up_events[index], WAIT_FOR_PROCESS_S):
                return None
            link = self.up[index]
            if link is None:
                return None
        return await link.ask(req_id, request)


def _not_stored(count: int) -> list[Receipt]:
    return [Receipt("not_stored", "not_stored", GONE)] * count


def _each_answered(receipts: list[Receipt] | None, count: int) -> list[Receipt]:
    """A backlog's Receipts, one per frame: not_stored for all when its process ended before it answered."""
    return receipts if receipts is not None and len(receipts) == count else _not_stored(count)


class DispatchingIngress(Ingress):
    """The main process's ingress when intake processes run: frames go to them; the rest stays here."""

    def __init__(self, links: IntakeLinks, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.links = links

    async def receive(self, frame: Frame, claim: Claim, *, raw: str | None = None,
                      overrides: dict[str, Any] | None = None, ref_scheme: str | None = None,
                      repeats_answered: bool = False) -> Receipt:
        try:
            req_id, request = self.links.request(
                receive_request(frame, claim, raw, overrides, ref_scheme, repeats_answered))
        except ValueError:  # an override marshal cannot carry (none of the transports sends one): stored here
            return await super().receive(frame, claim, raw=raw, overrides=overrides, ref_scheme=ref_scheme,
                                         repeats_answered=repeats_answered)
        receipts = await self.links.ask(dispatch_key(claim), req_id, request)
        return receipts[0] if receipts else _not_stored(1)[0]

    def registry_changed(self) -> None:
        """Here and in every intake process that is up (one starting now reads the registry afresh)."""
        super().registry_changed()
        message = pack((0, FORGET, ()))
        for link in self.links.up:
            if link is not None:
                link.send_raw(message)

    def send_ahead(self, frames: BatchFrames, *, ref_scheme: str | None = None, repeats_answered: bool = False,
                   behind: object | None = None) -> SentAhead | None:
        """To the sender's intake process now, if it is up and is the one its unanswered backlog (`behind`)
        went to: that process stores a sender's requests one after another, in the order they came, and
        refuses one sent `behind` another that was not stored entirely (bridge/app/intake_process.py)."""
        if not frames:
            return None
        link = self.links.up[self.links.index(dispatch_key(frames[0][1]))]
        if link is None or link.lost.done() or (behind is not None and behind is not link):
            return None
        req_id, request = self.links.request(batch_request(frames, ref_scheme, repeats_answered,
                                                           after_previous=behind is not None))
        answer = link.submit(req_id, request)
        receipts: asyncio.Future[list[Receipt]] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(lambda done: receipts.set_result(
            _each_answered(None if done.cancelled() else done.result(), len(frames))))
        return SentAhead(link, receipts)

    async def receive_batch(self, frames: BatchFrames, *, ref_scheme: str | None = None,
                            repeats_answered: bool = False) -> list[Receipt]:
        if not frames:
            return []
        # One sender's backlog (the transports' contract): its first frame's claim places it.
        req_id, request = self.links.request(batch_request(frames, ref_scheme, repeats_answered))
        receipts = await self.links.ask(dispatch_key(frames[0][1]), req_id, request)
        return _each_answered(receipts, len(frames))


def intake_processes(settings: Settings, routes: RoutingTable, links: IntakeLinks, gateway: SmsGateway,
                     raise_alarm: Callable[[str, str], None], clear_alarm: Callable[[str], None]) -> ChildProcesses:
    """`links.count` intake processes; each hello carries the settings, the main process's routes (a
    contact queued in an intake process picks its routes from the same table as one queued here, whatever
    the child's environment says, as for delivery processes) and whether SMS is declared, so processes
    started later learn what the transports declared when they started."""
    return ChildProcesses("intake process", MODULE,
                          lambda: frame(pickle.dumps((settings, routes, gateway.declared))),
                          links.count, links.link, links.any_ready, ALARM, raise_alarm, clear_alarm)

