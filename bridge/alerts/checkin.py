"""Check-in timers for people at risk: "check on me in 30 minutes" (docs/operations/checkin.md).

The contract:
- A device has at most one running timer. `start` sets it due in N minutes (starting again replaces
  it); `extend` adds minutes to whichever is later, the due time or now; `stop` ends it.
- Once, `reminder_at()` before it is due, the person is reminded through `reminders` (the channel the
  timer was started on, where the bridge can reach the device; else the device's reminder webhook).
- Not stopped in time: a `check_in_missed` alert with the timer's note goes to the platform, silent if the
  timer was started silently. Its message id is `checkin:<timer_id>:<kind>`, so it is never raised twice;
  the location is the pipeline's (the last known fix, else the registered address).
- A stop with the device's duress code (credential scheme `checkin_duress`) ends the timer exactly as a
  stop does, the same answer to the device, and raises a silent `duress` alert with the note.
- Durable and shared: each change is a versioned write of the device's row in the bridge's store
  (SQLite or Redis, `Store.put_checkin`) before it is answered, so every instance on one store sees the
  same timer and a restart (even kill -9) keeps it. An overdue timer is raised at once after a restart.
- Exactly one instance steps a timer: the loop leases due rows (`Store.lease_checkins`). An expiry is
  first written as `expired` with its alert pending (a stop racing it either wins or finds no timer),
  then raised; if the instance dies in between, another raises it after RAISE_RETRY_S, and the alert's
  message id makes sure the platform gets it once.

Pure rules: `reminder_at`, `due_step`, `extended`, `next_step_at`. The service: `CheckinTimers`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Literal

from bridge.alerts.pipeline import Rejected
from bridge.alerts.supervision import Submitter
from bridge.core.model import AlertKind, Device, Observation
from bridge.infra.aio import stop_tasks, wait_event
from bridge.store.base import CheckinRow, ConcurrentUpdate, Store, StoreError, secret_matches

log = logging.getLogger("sosbridge.checkin")

TRANSPORT = "checkin"
DURESS_SCHEME = "checkin_duress"
MIN_MINUTES = 1
MAX_MINUTES = 24 * 60
MAX_NOTE = 500
REMINDER_MAX_S = 300.0
MAX_TICK_S = 5.0  # the loop looks at the store at least this often (timers another instance changed)
LEASE_S = 30.0  # how long one instance holds a due timer while it reminds or raises
RAISE_RETRY_S = 30.0  # an alert still pending this long after it was decided is raised by any instance
LEASE_BATCH = 50
WEBHOOK = "webhook"  # the reminder for channels without one of their own (device_adapters/checkin/webhook.py)
WRITE_RETRIES = 20

State = Literal["running", "stopped", "expired", "coerced", "replaced"]
Step = Literal["remind", "expire", "raise"]


class CheckinError(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Timer:
    timer_id: str
    device_id: str
    tenant_id: str
    started_at: float
    due_at: float
    note: str = ""
    silent: bool = False
    channel: str = "http"
    state: State = "running"
    reminded: bool = False
    ended_at: float | None = None
    alert_id: str | None = None
    # An alert was decided (expired, or stopped with the duress code) and is not yet known to be raised.
    pending_alert: bool = False
    # When the reminder went (the HTTP app polls GET /v1/checkin for it).
    reminded_at: float | None = None

    def public(self, now: float | None = None) -> dict[str, object]:
        """What the device and whoever is near it see: a coerced stop looks like any other stop."""
        now = time.time() if now is None else now
        shown: str = "stopped" if self.state == "coerced" else self.state
        return {
            "timer_id": self.timer_id,
            "state": shown,
            "started_at": _iso(self.started_at),
            "due_at": _iso(self.due_at),
            "remaining_s": max(0, round(self.due_at - now)) if self.state == "running" else 0,
            "note": self.note,
            "silent": self.silent,
            "reminded": self.reminded,
            "reminded_at": _iso(self.reminded_at) if self.reminded_at is not None else None,
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


# -- pure rules -------------------------------------------------------------------------------------------
def check_minutes(minutes: float) -> float:
    if not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise CheckinError("invalid_minutes", f"minutes must be between {MIN_MINUTES} and {MAX_MINUTES}")
    return float(minutes)


def reminder_at(timer: Timer) -> float:
    """When the reminder goes: 5 minutes before it is due, or half way for a timer shorter than 10."""
    lead = min(REMINDER_MAX_S, (timer.due_at - timer.started_at) / 2)
    return timer.due_at - lead


def due_step(timer: Timer, now: float) -> tuple[Step | None, float]:
    """What a timer needs now (None, "remind", "expire", or "raise" its pending alert) and when its next
    step is due."""
    if timer.pending_alert:
        return "raise", now
    if timer.state != "running":
        return None, float("inf")
    if now >= timer.due_at:
        return "expire", timer.due_at
    remind = reminder_at(timer)
    if not timer.reminded:
        return ("remind", remind) if now >= remind else (None, remind)
    return None, timer.due_at


def extended(timer: Timer, minutes: float, now: float) -> Timer:
    """The timer with `minutes` more, from its due time or from now, whichever is later; reminded again."""
    return replace(timer, due_at=max(timer.due_at, now) + check_minutes(minutes) * 60, reminded=False,
                   reminded_at=None)


def next_step_at(timer: Timer) -> float | None:
    """When the loop must next look at this timer; None: never again (stopped, or raised)."""
    if timer.pending_alert:
        return (timer.ended_at or timer.due_at) + RAISE_RETRY_S
    if timer.state != "running":
        return None
    return timer.due_at if timer.reminded else reminder_at(timer)


def to_row(timer: Timer) -> CheckinRow:
    at = next_step_at(timer)
    return CheckinRow(timer.device_id, timer.timer_id, json.dumps(asdict(timer)), at is not None,
                      timer.due_at if at is None else at)


def from_row(row: CheckinRow) -> Timer:
    """The timer of a stored row; fields a newer bridge added are ignored (instances may be upgraded one at
    a time)."""
    known = {f.name for f in fields(Timer)}
    return Timer(**{k: v for k, v in json.loads(row.doc).items() if k in known})


# -- the service ------------------------------------------------------------------------------------------
Reminder = Callable[[Timer], Awaitable[None]]
Edit = Callable[[Timer | None, float], Timer]  # the device's timer (or None), now -> the new one


class CheckinTimers:
    """Starts, extends and stops timers; a loop reminds and raises. One per bridge process; any number of
    processes share the timers through the store."""

    def __init__(self, store: Store, pipeline: Submitter, clock: Callable[[], float] = time.time):
        self.store = store
        self.pipeline = pipeline
        self.clock = clock
        self.reminders: dict[str, Reminder] = {}  # channel -> how to remind a device on it
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="checkin-timers")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])

    def poke(self) -> None:
        """Look at the timers now (after the clock was changed, say) instead of at the next planned step."""
        self._wake.set()

    # -- what the entry channels call -------------------------------------------------------------------
    async def current(self, device_id: str) -> Timer | None:
        """The device's running timer, if any."""
        timer = await self.last(device_id)
        return timer if timer is not None and timer.state == "running" else None

    async def last(self, device_id: str) -> Timer | None:
        """The device's running timer, else its last one."""
        row = await self.store.get_checkin(device_id)
        return from_row(row) if row is not None else None

    async def begin(self, device: Device, minutes: float, note: str = "", silent: bool = False,
                    channel: str = "http") -> Timer:
        minutes = check_minutes(minutes)
        note = note.strip()[:MAX_NOTE]
        old = await self.last(device.device_id)
        if old is not None and old.pending_alert:
            await self._raise_pending(old)  # never replace an alert that is still to be raised

        def start(_old: Timer | None, now: float) -> Timer:
            return Timer(uuid.uuid4().hex, device.device_id, device.tenant_id, now, now + minutes * 60, note,
                         silent, channel)

        timer, _ = await self._change(device.device_id, start)
        log.info("check-in timer started", extra={"device_id": device.device_id, "timer_id": timer.timer_id,
                                                  "minutes": minutes, "silent": silent, "channel": channel})
        return timer

    async def extend(self, device: Device, minutes: float) -> Timer:
        check_minutes(minutes)
        timer, _ = await self._change(device.device_id, lambda old, now: extended(_running(old), minutes, now))
        log.info("check-in timer extended", extra={"device_id": device.device_id, "timer_id": timer.timer_id})
        return timer

    async def end(self, device: Device, code: str | None = None) -> Timer:
        """Stop the running timer. With the duress code it is recorded as coerced and a silent duress
        alert is raised; the returned timer's `public()` view is the same either way."""
        coerced = await self._is_duress(device, code)

        def stop(old: Timer | None, now: float) -> Timer:
            return replace(_running(old), state="coerced" if coerced else "stopped", ended_at=now,
                           pending_alert=coerced)

        timer, version = await self._change(device.device_id, stop)
        if coerced:
            await self._raise_and_settle(timer, version)
        log.info("check-in timer stopped", extra={"device_id": device.device_id, "timer_id": timer.timer_id})
        return timer

    # -- internals ----------------------------------------------------------------------------------------
    async def _change(self, device_id: str, change: Edit) -> tuple[Timer, int]:
        """Read the device's row, apply `change`, write it back versioned; re-read on a concurrent write."""
        for _ in range(WRITE_RETRIES):
            row = await self.store.get_checkin(device_id)
            timer = change(from_row(row) if row is not None else None, self.clock())
            try:
                version = await self.store.put_checkin(to_row(timer), row.version if row is not None else None)
            except ConcurrentUpdate:
                continue
            self._wake.set()
            return timer, version
        raise StoreError(f"check-in timer of {device_id!r} changed concurrently too often")

    async def _put(self, timer: Timer, version: int) -> int | None:
        """A write by the loop; None when the person changed the timer meanwhile (their write wins)."""
        try:
            return await self.store.put_checkin(to_row(timer), version)
        except ConcurrentUpdate:
            return None

    async def _is_duress(self, device: Device, code: str | None) -> bool:
        if not code:
            return False
        stored = await self.store.get_credential(device.device_id, DURESS_SCHEME)
        return stored is not None and secret_matches(code, stored)

    async def _raise(self, timer: Timer, kind: AlertKind, silent: bool, reason: str) -> str | None:
        """The alert's id; None when the pipeline refused it for good. A store outage raises."""
        obs = Observation(
            device_id=timer.device_id,
            transport=TRANSPORT,
            kind=kind,
            silent=silent,
            message_id=f"checkin:{timer.timer_id}:{kind.value}",
            reason=reason,
            attributes={"checkin_timer_id": timer.timer_id, "checkin_note": timer.note,
                        "checkin_started_at": _iso(timer.started_at), "checkin_due_at": _iso(timer.due_at)},
        )
        try:
            result = await self.pipeline.submit(obs)
        except Rejected as exc:
            log.warning("check-in alert not accepted", extra={"device_id": timer.device_id, "code": exc.code})
            return None
        log.info("check-in alert raised", extra={"device_id": timer.device_id, "alert_id": result.alert_id,
                                                 "kind": kind.value, "timer_id": timer.timer_id})
        return result.alert_id

    async def _raise_pending(self, timer: Timer) -> str | None:
        if timer.state == "coerced":
            return await self._raise(timer, AlertKind.duress, silent=True,
                                     reason="check-in timer stopped with the duress code")
        return await self._raise(timer, AlertKind.check_in_missed, silent=timer.silent,
                                 reason="check-in timer ran out without being stopped")

    async def _raise_and_settle(self, timer: Timer, version: int) -> None:
        alert_id = await self._raise_pending(timer)
        await self._put(replace(timer, pending_alert=False, alert_id=alert_id), version)

    async def _remind(self, timer: Timer) -> None:
        # The channel's own reminder (MQTT, Hermes), else the device's webhook if it has one.
        remind = self.reminders.get(timer.channel) or self.reminders.get(WEBHOOK)
        if remind is None:
            return  # the HTTP app also polls GET /v1/checkin for `reminded_at`
        try:
            await remind(timer)
        except Exception as exc:  # a channel down must not stop the timer from running out
            log.warning("check-in reminder failed", extra={"device_id": timer.device_id, "error": repr(exc)})

    async def _step(self, row: CheckinRow) -> None:
        timer, now = from_row(row), self.clock()
        step, _ = due_step(timer, now)
        if step == "remind":
            await self._remind(timer)
            await self._put(replace(timer, reminded=True, reminded_at=now), row.version)
        elif step == "expire":
            expired = replace(timer, state="expired", ended_at=now, pending_alert=True)
            version = await self._put(expired, row.version)
            if version is not None:  # else stopped or extended meanwhile: the person's write won
                await self._raise_and_settle(expired, version)
        elif step == "raise":
            await self._raise_and_settle(timer, row.version)
        else:
            await self._put(timer, row.version)  # nothing due after all: the row's next step, written again

    async def _step_logged(self, row: CheckinRow) -> None:
        try:
            await self._step(row)
        except Exception as exc:  # a store outage or a bug: the lease runs out, then it is retried
            log.error("check-in step failed", extra={"device_id": row.device_id, "timer_id": row.timer_id,
                                                      "error": repr(exc)})

    async def _loop(self) -> None:
        while True:  # a service loop: stop() cancels it
            self._wake.clear()
            wait = MAX_TICK_S
            try:
                rows = await self.store.lease_checkins(self.clock(), LEASE_S, LEASE_BATCH)
                # Each device's step on its own: one slow reminder webhook must not hold the others past
                # their lease.
                await asyncio.gather(*(self._step_logged(row) for row in rows))
                next_at = await self.store.next_checkin_at()
                if len(rows) >= LEASE_BATCH:
                    wait = 0.0
                elif next_at is not None:
                    wait = min(MAX_TICK_S, max(0.0, next_at - self.clock()))
            except Exception as exc:
                log.error("check-in loop failed", extra={"error": repr(exc)})
                wait = 1.0
            await wait_event(self._wake, wait)


def _running(timer: Timer | None) -> Timer:
    if timer is None or timer.state != "running":
        raise CheckinError("no_timer", "no check-in timer is running")
    return timer
