"""Outbox forwarder: lease queued contacts, deliver them, retry with backoff, fail over, raise alarms.

At-least-once: a row stays leased (not deleted) while in flight, so a crash at any point leaves it to be
re-leased when its lease expires. Critical contacts are never given up: past `fallback_after_attempts`
they also go to the fallback sink and raise an operational alarm, while the primary keeps being retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime

from bridge.alerts.emergency_contacts import channel_route, is_notify_route
from bridge.alerts.handoff import FreshContacts
from bridge.alerts.ledger import Ledger
from bridge.alerts.rules import Rejected
from bridge.core.lifecycle import LifecycleEvent
from bridge.core.model import STORED, Alert
from bridge.delivery.sinks.base import Delivered, Permanent, Retry, Sink, deliver_guarded
from bridge.infra.aio import stop_tasks, wait_event
from bridge.infra.metrics import Metrics
from bridge.store.base import OutboxItem, Store, StoreError, lease_rank

log = logging.getLogger("sosbridge.forwarder")

STOP_DRAIN_S = 2.0  # how long a stopping forwarder waits for deliveries already under way
# Windows of contacts (`workers` each) leased ahead while every worker is busy. Under a flood a lease waits
# for the intake's group commit in flight (40-50 ms) while a POST takes 10-25 ms, so one window left the
# workers idle most of that wait: the police got about 250 contacts a second while the bridge stored
# 1,700 (docs/testing/benchmarks.md#delivery-in-step).
AHEAD_WINDOWS = 4


def backoff_delay(attempts: int, base_s: float, max_s: float, retry_after_s: float | None, rng: random.Random) -> float:
    """Exponential backoff with full jitter in [0.5, 1] of the step; Retry-After is a floor, capped at max."""
    step = min(max_s, base_s * (2 ** max(0, attempts - 1)))
    delay = step * (0.5 + rng.random() / 2)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_s))
    return delay


@dataclass
class Alarm:
    reason: str
    detail: str
    raised_at: float = field(default_factory=time.time)


class Forwarder:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        metrics: Metrics,
        sinks: dict[str, Sink],
        fallback: Sink | None,
        *,
        fresh: FreshContacts | None = None,
        fallbacks: dict[str, Sink] | None = None,
        workers: int = 4,
        lease_s: float = 30.0,
        retry_base_s: float = 0.5,
        retry_max_s: float = 60.0,
        fallback_after_attempts: int = 3,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.metrics = metrics
        self.sinks = sinks
        self.fallback = fallback
        self.fallbacks = fallbacks or {}
        self.workers = workers
        self.lease_s = lease_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.fallback_after_attempts = fallback_after_attempts
        self.alarms: dict[str, Alarm] = {}
        # Brand-new alerts' first contacts, handed over in memory by the ledger after their commit; its
        # event is this forwarder's wake-up (a commit that queued contacts sets it).
        self.fresh = fresh if fresh is not None else FreshContacts(workers, lease_s)
        self._wake = self.fresh.event
        self._rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        # Deliveries to the person's emergency contacts: outside the workers' count, so a slow mail server
        # never takes a worker from a police contact (up to `workers` of them; past that they count).
        self._notify_inflight: set[asyncio.Task[None]] = set()
        # Deliveries being recorded in the store (outside the workers' count: see _record_delivery).
        self._recording: set[asyncio.Task[None]] = set()
        # Leased ahead while every worker is busy, started in lease order as workers come free: a worker
        # that comes free starts the next contact at once instead of waiting for a lease (one group commit,
        # 0.04-0.15 s under a flood). At most AHEAD_WINDOWS windows (`workers` each) of them; never empty
        # while a worker is free.
        self._ahead: collections.deque[OutboxItem] = collections.deque()
        self._ahead_as_of = 0  # FreshContacts.left_commits when the look-ahead was last leased
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="forwarder")

    async def stop(self) -> None:
        self._stopping = True
        self.fresh.closed = True
        self._wake.set()
        if self._task is not None:
            await stop_tasks([self._task])  # nothing new is leased or taken from here on
        await self._give_back_ahead()
        # Deliveries under way get a moment to hear the platform's answer and have it recorded, so a clean
        # stop sends nothing twice; one still running after that is cancelled and keeps its lease (a
        # restart sends it again, same Idempotency-Key, once the lease expires).
        running = [*self._inflight, *self._notify_inflight]
        if running:
            await asyncio.wait(running, timeout=STOP_DRAIN_S)
        await stop_tasks([*self._inflight, *self._notify_inflight])
        if self._recording:
            # Recording a delivery is one queued write: let it land, so a clean stop sends nothing twice.
            await asyncio.wait(list(self._recording), timeout=5)
            await stop_tasks(list(self._recording))
        every = [*self.sinks.values(), *self.fallbacks.values(), self.fallback]
        for sink in {id(s): s for s in every if s is not None}.values():
            await sink.close()

    def raise_alarm(self, reason: str, detail: str) -> None:
        if reason not in self.alarms:
            self.metrics.alarms.labels(reason).inc()
        self.alarms[reason] = Alarm(reason, detail)
        self.metrics.degraded.set(1)
        log.error("operational alarm", extra={"alarm": reason, "detail": detail})

    def clear_alarm(self, reason: str) -> None:
        if self.alarms.pop(reason, None) is not None:
            log.warning("operational alarm cleared", extra={"alarm": reason})
        self.metrics.degraded.set(1 if self.alarms else 0)

    def _free_workers(self) -> int:
        notify_excess = max(0, len(self._notify_inflight) - self.workers)
        return self.workers - len(self._inflight) - self.fresh.reserved - notify_excess

    def _count_busy(self) -> None:
        """What FreshContacts counts as taken: deliveries running and contacts leased ahead (a claim in
        memory while any waits would overtake it)."""
        self.fresh.busy = len(self._inflight) + len(self._ahead)

    def _start_ahead(self) -> None:
        """Start contacts leased ahead, in lease order, while workers are free."""
        now = time.time()
        while self._ahead and self._free_workers() > 0:
            item = self._ahead.popleft()
            if item.lease_until <= now:
                continue  # its lease ran out while it waited: the store leases it again (expired rows)
            self._spawn(item)
        self._count_busy()

    def _outranked_may_wait(self) -> bool:
        """A new alert's first contact was left in the store since the look-ahead was leased, and the look-ahead
        holds something it would outrank (an update, a non-critical contact): lease before starting any."""
        return (self.fresh.left_commits != self._ahead_as_of
                and any(lease_rank(item)[:2] != (False, False) for item in self._ahead))

    async def _give_back_ahead(self) -> None:
        """Stopping: contacts leased ahead and never started are due again at once, not when their lease
        would have run out (a restart sends them straight away; attempts unchanged)."""
        ahead, self._ahead = list(self._ahead), collections.deque()
        now = time.time()
        # All at once, so they share the store's group commits: up to AHEAD_WINDOWS x workers of them, one
        # commit (and fsync) each if awaited in turn.
        results = await asyncio.gather(
            *(self.store.reschedule(item.item_id, now, "not started before the bridge stopped", item.attempts)
              for item in ahead),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, StoreError):
                raise result

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before taking and leasing: a hand-over during the lease below wakes the next wait.
            self._wake.clear()
            # Leased ahead first: they were stored before anything claimed since (claims wait while any is),
            # unless a new alert's first contact waiting in the store outranks them (leased first, below).
            if not self._outranked_may_wait():
                self._start_ahead()
            for item in self.fresh.take():
                self._spawn(item)
            # Room for the free workers, and for the windows to lease ahead while all are busy.
            room = max(0, self._free_workers()) + AHEAD_WINDOWS * self.workers - len(self._ahead)
            items: list[OutboxItem] = []
            left_commits = self.fresh.left_commits
            if room > 0:
                try:
                    items = await self.store.lease(room, self.lease_s, time.time())
                    self._ahead_as_of = left_commits
                    self.clear_alarm("store_unavailable")
                except StoreError as exc:
                    self.raise_alarm("store_unavailable", str(exc))
                    await asyncio.sleep(1.0)
                    continue
            for item in items:
                # A notification to an emergency contact takes no police worker: it starts at once, so it
                # never stands in the look-ahead in front of a police contact.
                if is_notify_route(item.route):
                    self._spawn(item)
                else:
                    self._ahead.append(item)
            if items and len(self._ahead) > len(items):
                # In the store's lease order, so a life-safety first contact leased now goes before updates
                # leased ahead earlier (a stable sort: equal ranks keep their order).
                self._ahead = collections.deque(sorted(self._ahead, key=lease_rank))
            self._start_ahead()
            if room > 0 and len(items) < room:
                self.fresh.drained(left_commits)  # new alerts' first contacts may skip the store again
            if items and len(items) == room and self._free_workers() > 0:
                continue
            await wait_event(self._wake, 0.25)

    def _spawn(self, item: OutboxItem) -> None:
        task = asyncio.create_task(self._deliver(item))
        (self._notify_inflight if is_notify_route(item.route) else self._inflight).add(task)
        self._count_busy()
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._notify_inflight.discard(task)
        self._count_busy()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", extra={"error": repr(task.exception())})
        if not self._stopping and not self._outranked_may_wait():
            # The next contact leased ahead starts now, not when the lease under way (if any) comes back.
            self._start_ahead()
        self._wake.set()

    async def _deliver(self, item: OutboxItem) -> None:
        # A notification to an emergency contact goes to its channel's sink, never to the police default.
        family = channel_route(item.route) if is_notify_route(item.route) else "default"
        sink = self.sinks.get(item.route) or self.sinks.get(family)
        outcome = await deliver_guarded(sink, item, f"no sink configured for route {item.route!r}")
        sink_name = sink.name if sink is not None else "none"
        attempts = item.attempts + 1
        if isinstance(outcome, Delivered):
            self.metrics.deliveries.labels(sink_name, "delivered").inc()
            # The worker is free as soon as the platform said 2xx: the bookkeeping goes into the store's
            # next group commit on its own task. A worker that waited for that commit held its slot for
            # an fsync per contact, which capped delivery at workers / (POST + commit) — 450/s with 16.
            task = asyncio.create_task(self._record_delivery(item))
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)
            return
        kind = "retry" if isinstance(outcome, Retry) else "permanent"
        self.metrics.deliveries.labels(sink_name, kind).inc()
        log.warning(
            "delivery failed",
            extra={"alert_id": item.alert_id, "seq": item.seq, "attempts": attempts, "outcome": outcome.reason},
        )
        if isinstance(outcome, Permanent):
            self.raise_alarm("permanent_delivery_failure", f"{item.idempotency_key}: {outcome.reason}")
            if not item.critical:
                await self.store.mark_dead(item.item_id, outcome.reason, attempts)
                return
        if item.critical and (attempts >= self.fallback_after_attempts or isinstance(outcome, Permanent)):
            await self._fail_over(item, outcome.reason)
        retry_after = outcome.after_s if isinstance(outcome, Retry) else self.retry_max_s
        delay = backoff_delay(attempts, self.retry_base_s, self.retry_max_s, retry_after, self._rng)
        await self.store.reschedule(item.item_id, time.time() + delay, outcome.reason, attempts)

    async def _record_delivery(self, item: OutboxItem) -> None:
        """Mark the row delivered (with the alert's `forwarded`, for a first contact). The row stays
        leased until this commits, so a later contact of the alert still waits for it (order), and if the
        write is lost the lease expires and the contact goes out again with the same Idempotency-Key."""
        try:
            if not await self._after_delivery(item):
                await self.store.mark_delivered(item.item_id, time.time())
        except StoreError as exc:
            log.warning("delivery not recorded; the lease will expire and it is sent again",
                        extra={"alert_id": item.alert_id, "seq": item.seq, "error": str(exc)})
        finally:
            self._wake.set()  # the next contact of this alert may be leased now

    async def _fail_over(self, item: OutboxItem, reason: str) -> None:
        self.raise_alarm("critical_contact_overdue", f"{item.idempotency_key}: {reason}")
        fallback = self.fallbacks.get(item.route) or self.fallback
        if item.fallback_sent or fallback is None:
            return
        outcome = await fallback.deliver(item)
        self.metrics.deliveries.labels(fallback.name, "fallback_" + type(outcome).__name__.lower()).inc()
        if isinstance(outcome, Delivered):
            await self.store.mark_fallback_sent(item.item_id)
            log.error("critical contact sent to fallback", extra={"alert_id": item.alert_id, "seq": item.seq})

    async def _after_delivery(self, item: OutboxItem) -> bool:
        """The first contact's delivery moves the alert to `forwarded`, in the same write that marks the
        row delivered. True when that write marked it."""
        if item.msg_type != "alert":
            return False
        # The alert travels with the row (handed over fresh, or read by the lease); a read only otherwise.
        if item.alert is not None:
            alert: Alert | None = item.alert
        elif item.alert_doc is not None:
            alert = Alert.model_validate_json(item.alert_doc, context=STORED)  # cleaned when it came in
        else:
            alert = await self.store.get_alert(item.alert_id)
        if alert is None:
            return False
        self.metrics.e2e_latency.observe(max(0.0, time.time() - datetime.timestamp(alert.received_at)))
        with contextlib.suppress(Rejected):
            await self.ledger.lifecycle_event(item.alert_id, LifecycleEvent.delivered, actor="forwarder",
                                                known=alert, delivered_item=item.item_id)
        return True

    async def refresh_health(self, overdue_attempts: int) -> None:
        stats = await self.store.outbox_stats(time.time(), overdue_attempts)
        self.metrics.outbox_depth.set(stats.pending + stats.retry + stats.inflight)
        self.metrics.outbox_oldest_age.set(stats.oldest_pending_age_s)
        if stats.critical_overdue == 0:
            self.clear_alarm("critical_contact_overdue")
        if stats.retry == 0 and stats.dead == 0:
            self.clear_alarm("permanent_delivery_failure")
