"""Check-in timers for people at risk: "check on me in 30 minutes" (docs/operations/checkin.md).

The contract:
- A device has at most one running timer. `start` sets it due in N minutes (starting again replaces
  it); `extend` adds minutes to whichever is later, the due time or now; `stop` ends it.
- Once, `reminder_at()` before it is due, the person is reminded through `remind` (the channel the timer
  was started on, where the bridge can reach the device).
- Not stopped in time: a `check_in_missed` alert with the timer's note goes to the platform, silent if the
  timer was started silently. Its message id is `checkin:<timer_id>`, so a restart never raises it twice;
  the location is the pipeline's (the last known fix, else the registered address).
- A stop with the device's duress code (credential scheme `checkin_duress`) ends the timer exactly as a
  stop does, the same answer to the device, and raises a silent `duress` alert with the note.
- Durable: each change is written to a SQLite table under `data_dir` before it is answered; after a
  restart the running timers are loaded again and an overdue one is raised at once.

Pure rules: `reminder_at`, `due_step`, `extended`. The service: `CheckinTimers`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from bridge.alerts.pipeline import Pipeline, Rejected
from bridge.core.model import AlertKind, Device, Observation
from bridge.infra.aio import stop_tasks, wait_event
from bridge.infra.private_files import private_sqlite
from bridge.store.base import Store, StoreError, secret_matches

log = logging.getLogger("sosbridge.checkin")

TRANSPORT = "checkin"
DURESS_SCHEME = "checkin_duress"
MIN_MINUTES = 1
MAX_MINUTES = 24 * 60
MAX_NOTE = 500
REMINDER_MAX_S = 300.0
MAX_TICK_S = 5.0

State = Literal["running", "stopped", "expired", "coerced", "replaced"]
Step = Literal["remind", "expire"]


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
    """What a running timer needs now (None, "remind" or "expire") and when its next step is due."""
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
    return replace(timer, due_at=max(timer.due_at, now) + check_minutes(minutes) * 60, reminded=False)


# -- the durable table ------------------------------------------------------------------------------------
class TimerTable:
    """Timers as JSON rows in a small SQLite file (the store contract has no place for them yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # calls come from worker threads; stop() may close meanwhile

    def open(self) -> None:
        with self._lock:
            private_sqlite(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS timers (timer_id TEXT PRIMARY KEY, device_id TEXT NOT NULL,"
                             " state TEXT NOT NULL, doc TEXT NOT NULL)")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def save(self, timer: Timer) -> None:
        with self._lock:
            if self._db is None:
                raise StoreError("check-in table closed")
            self._db.execute("INSERT OR REPLACE INTO timers (timer_id, device_id, state, doc) VALUES (?, ?, ?, ?)",
                             (timer.timer_id, timer.device_id, timer.state, json.dumps(asdict(timer))))

    def running(self) -> list[Timer]:
        with self._lock:
            if self._db is None:
                return []
            rows = self._db.execute("SELECT doc FROM timers WHERE state = 'running'").fetchall()
        return [Timer(**json.loads(r[0])) for r in rows]

    def latest(self, device_id: str) -> Timer | None:
        with self._lock:
            if self._db is None:
                return None
            row = self._db.execute("SELECT doc FROM timers WHERE device_id = ? ORDER BY rowid DESC LIMIT 1",
                                   (device_id,)).fetchone()
        return Timer(**json.loads(row[0])) if row else None


# -- the service ------------------------------------------------------------------------------------------
Reminder = Callable[[Timer], Awaitable[None]]


class CheckinTimers:
    """Starts, extends and stops timers; a loop reminds and raises. One instance per bridge process."""

    def __init__(self, store: Store, pipeline: Pipeline, data_dir: Path, clock: Callable[[], float] = time.time):
        self.store = store
        self.pipeline = pipeline
        self.table = TimerTable(data_dir / "checkin-timers.db")
        self.clock = clock
        self.reminders: dict[str, Reminder] = {}  # channel -> how to remind a device on it
        self._timers: dict[str, Timer] = {}  # device_id -> its running timer
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.table.open)
        self._timers = {t.device_id: t for t in await asyncio.to_thread(self.table.running)}
        self._task = asyncio.create_task(self._loop(), name="checkin-timers")
        log.info("check-in timers loaded", extra={"running": len(self._timers)})

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
        await asyncio.to_thread(self.table.close)

    def poke(self) -> None:
        """Look at the timers now (after the clock was changed, say) instead of at the next planned step."""
        self._wake.set()

    # -- what the entry channels call -------------------------------------------------------------------
    def current(self, device_id: str) -> Timer | None:
        return self._timers.get(device_id)

    async def last(self, device_id: str) -> Timer | None:
        return self._timers.get(device_id) or await asyncio.to_thread(self.table.latest, device_id)

    async def begin(self, device: Device, minutes: float, note: str = "", silent: bool = False,
                    channel: str = "http") -> Timer:
        minutes = check_minutes(minutes)
        note = note.strip()[:MAX_NOTE]
        async with self._lock:
            now = self.clock()
            old = self._timers.get(device.device_id)
            if old is not None:
                await self._save(replace(old, state="replaced", ended_at=now))
            timer = Timer(uuid.uuid4().hex, device.device_id, device.tenant_id, now, now + minutes * 60, note,
                          silent, channel)
            await self._save(timer)
        log.info("check-in timer started", extra={"device_id": device.device_id, "timer_id": timer.timer_id,
                                                  "minutes": minutes, "silent": silent, "channel": channel})
        return timer

    async def extend(self, device: Device, minutes: float) -> Timer:
        async with self._lock:
            timer = self._running(device)
            timer = extended(timer, minutes, self.clock())
            await self._save(timer)
        log.info("check-in timer extended", extra={"device_id": device.device_id, "timer_id": timer.timer_id})
        return timer

    async def end(self, device: Device, code: str | None = None) -> Timer:
        """Stop the running timer. With the duress code it is recorded as coerced and a silent duress
        alert is raised; the returned timer's `public()` view is the same either way."""
        coerced = await self._is_duress(device, code)
        async with self._lock:
            timer = self._running(device)
            timer = replace(timer, state="coerced" if coerced else "stopped", ended_at=self.clock())
            await self._save(timer)
        if coerced:
            alert_id = await self._raise(timer, AlertKind.duress, silent=True,
                                         reason="check-in timer stopped with the duress code")
            if alert_id:
                await self._save(replace(timer, alert_id=alert_id))
        log.info("check-in timer stopped", extra={"device_id": device.device_id, "timer_id": timer.timer_id})
        return timer

    # -- internals ----------------------------------------------------------------------------------------
    def _running(self, device: Device) -> Timer:
        timer = self._timers.get(device.device_id)
        if timer is None:
            raise CheckinError("no_timer", "no check-in timer is running")
        return timer

    async def _is_duress(self, device: Device, code: str | None) -> bool:
        if not code:
            return False
        stored = await self.store.get_credential(device.device_id, DURESS_SCHEME)
        return stored is not None and secret_matches(code, stored)

    async def _save(self, timer: Timer) -> None:
        await asyncio.to_thread(self.table.save, timer)
        if timer.state == "running":
            self._timers[timer.device_id] = timer
        elif (cur := self._timers.get(timer.device_id)) is not None and cur.timer_id == timer.timer_id:
            del self._timers[timer.device_id]
        self._wake.set()

    async def _raise(self, timer: Timer, kind: AlertKind, silent: bool, reason: str) -> str | None:
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

    async def _step(self, timer: Timer, step: Step) -> None:
        if step == "remind":
            remind = self.reminders.get(timer.channel)
            if remind is not None:
                try:
                    await remind(timer)
                except Exception as exc:  # a channel down must not stop the timer from running out
                    log.warning("check-in reminder failed", extra={"device_id": timer.device_id, "error": repr(exc)})
            async with self._lock:
                if self._timers.get(timer.device_id) == timer:
                    await self._save(replace(timer, reminded=True))
            return
        alert_id = await self._raise(timer, AlertKind.check_in_missed, silent=timer.silent,
                                     reason="check-in timer ran out without being stopped")
        async with self._lock:
            if self._timers.get(timer.device_id) == timer:
                await self._save(replace(timer, state="expired", ended_at=self.clock(), alert_id=alert_id))

    async def _loop(self) -> None:
        while True:  # a service loop: stop() cancels it
            self._wake.clear()
            now = self.clock()
            next_at = now + MAX_TICK_S
            for timer in list(self._timers.values()):
                step, at = due_step(timer, now)
                if step is not None:
                    try:
                        await self._step(timer, step)
                    except Exception as exc:  # a store outage or a bug: retried in a second, the loop lives on
                        log.error("check-in step failed", extra={"device_id": timer.device_id,
                                                                  "timer_id": timer.timer_id, "error": repr(exc)})
                        at = now + 1.0
                next_at = min(next_at, at)
            await wait_event(self._wake, max(0.0, next_at - self.clock()))
