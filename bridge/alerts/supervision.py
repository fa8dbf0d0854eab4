"""Device supervision: a device that stops checking in raises `check_in_missed`; a silent gateway raises
`device_offline` for the devices behind it. Recovery, when the device is heard again, is recorded.

Pure rules (`effective_interval`, `last_heard`, `decide`) plus an async loop (`Supervisor`).

- A device is supervised when `Device.check_in_interval_s` (which wins) or its profile's
  `check_in_interval_s` is set. It is "heard" when its `last_seen` moves (heartbeats, location updates,
  alerts with a fix: the store's touch_device/commit) or when it raises or cancels an alert of its own
  (seen on the status bus, since an alert without a fix does not move `last_seen`).
- Silence longer than interval + grace raises one alert per silence: the silence is identified by the
  time the device was last heard, persisted in a small SQLite table under `Settings.data_dir`, and the
  same value is the alert's message id, so even a lost table cannot make the pipeline raise it twice.
- A gateway is a registered device that other devices name in `Device.gateway_id`. Its silence raises
  `device_offline` for each device behind it (the people are behind those devices, not behind the
  gateway), through `gateway_state_changed()`, the same path a gateway's own "offline" report takes.
  Devices behind an offline gateway raise no `check_in_missed` of their own: the cause is already out.
- When the device (or gateway) is heard again, each alert this silence raised that is still open gets
  `Observation(action="restore")`: a history entry and an update contact to the platform. Resolution
  stays the platform's decision. An audit row records the recovery either way.
- The loop sleeps until the next deadline (capped by `max_tick_s`, so new devices and moved `last_seen`
  values are picked up), so an alert is raised at interval + grace, not up to a polling period later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bridge.alerts.pipeline import Rejected, SubmitResult
from bridge.core.model import AlertKind, Device, Observation, utcnow
from bridge.infra.aio import READY_TIMEOUT_S, await_ready, stop_tasks, wait_event
from bridge.infra.private_files import private_sqlite
from bridge.store.base import Store, StoreError

if TYPE_CHECKING:
    from bridge.core.events import StatusBus
    from bridge.devices.profiles import DeviceProfile, ProfileRegistry

log = logging.getLogger("sosbridge.supervision")

TRANSPORT = "supervision"
DEFAULT_GRACE_S = 60.0
DEFAULT_MAX_TICK_S = 5.0
# Status-bus events that mean the device itself spoke (ack/resolve/delivered come from elsewhere).
DEVICE_EVENTS = frozenset({"received", "escalated", "cancelled"})


# -- pure rules ---------------------------------------------------------------------------------------------
def effective_interval(device: Device, profile: DeviceProfile | None) -> int | None:
    """The device's own interval overrides its profile's; None (or <= 0) means not supervised."""
    interval = device.check_in_interval_s
    if interval is None and profile is not None:
        interval = profile.check_in_interval_s
    return interval if interval is not None and interval > 0 else None


@dataclass
class Watch:
    """What the supervisor remembers about one device (persisted)."""

    device_id: str
    baseline: datetime  # when supervision of this device began: the clock for a device never heard
    heard_at: datetime | None = None  # last alert/cancel of its own, seen on the status bus
    silent_since: datetime | None = None  # set while a raised silence is open: the last_heard it was raised for
    kind: str | None = None
    alert_ids: list[str] = field(default_factory=list)


def last_heard(device: Device, watch: Watch) -> datetime:
    return max(t for t in (device.last_seen, watch.heard_at, watch.baseline) if t is not None)


Verdict = Literal["ok", "raise", "recover", "suppressed", "raised"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    heard: datetime
    due_at: datetime  # last_heard + interval + grace
    silence_s: float


def decide(
    device: Device,
    interval_s: int,
    watch: Watch,
    now: datetime,
    grace_s: float,
    behind_offline_gateway: bool = False,
) -> Decision:
    """One device, one moment: raise its silence, record its recovery, or leave it alone. Pure."""
    heard = last_heard(device, watch)
    due_at = heard + timedelta(seconds=interval_s + grace_s)
    silence = max(0.0, (now - heard).total_seconds())
    if watch.silent_since is not None:
        verdict: Verdict = "recover" if heard > watch.silent_since else "raised"
    elif now < due_at:
        verdict = "ok"
    elif behind_offline_gateway:
        verdict = "suppressed"
    else:
        verdict = "raise"
    return Decision(verdict, heard, due_at, silence)


def gateway_children(devices: Iterable[Device]) -> dict[str, list[Device]]:
    children: dict[str, list[Device]] = {}
    for d in devices:
        if d.gateway_id:
            children.setdefault(d.gateway_id, []).append(d)
    return children


# -- the shared gateway path --------------------------------------------------------------------------------
class Submitter(Protocol):
    """The ingress's entry for observations (`Ingress.observations`), or a Pipeline in unit tests."""

    async def submit(self, obs: Observation) -> SubmitResult: ...


class _Intake(Protocol):
    @property
    def observations(self) -> Submitter: ...


class SupervisedRuntime(Protocol):
    """What the supervisor takes from the running bridge (bridge/app/runtime.py), named here so the alert
    wing never imports the app wing."""

    @property
    def settings(self) -> Any: ...
    @property
    def store(self) -> Store: ...
    @property
    def ingress(self) -> _Intake: ...
    @property
    def bus(self) -> StatusBus: ...
    @property
    def profiles(self) -> ProfileRegistry: ...


async def gateway_state_changed(
    store: Store,
    pipeline: Submitter,
    gateway: str,
    online: bool,
    *,
    transport: str,
    reason: str,
    message_id: str | None = None,
) -> list[str]:
    """A gateway went offline (raise `device_offline` for each device behind it) or came back (restore
    the open `device_offline` alerts). Returns the alert ids raised or restored. Used by supervision when
    a gateway is silent and suitable for adapters whose gateway reports its own state (e.g. an MQTT last
    will), so both paths behave the same."""
    touched: list[str] = []
    behind = [d async for page in store.scan_devices() for d in page if d.gateway_id == gateway]
    for device in behind:
        open_alert = await store.open_alert_for_device(device.device_id)
        if online:
            if open_alert is None or open_alert.kind != AlertKind.device_offline:
                continue
            obs = Observation(
                device_id=device.device_id,
                transport=transport,
                action="restore",
                alert_id=open_alert.alert_id,
                reason=reason,
                attributes={"gateway": gateway},
            )
        else:
            if open_alert is not None and open_alert.kind == AlertKind.device_offline:
                continue  # already reported offline (e.g. by the gateway's own last will)
            obs = Observation(
                device_id=device.device_id,
                transport=transport,
                action="alert",
                kind=AlertKind.device_offline,
                reason=reason,
                message_id=f"{message_id}:{device.device_id}" if message_id else None,
                attributes={"gateway": gateway},
            )
        try:
            result = await pipeline.submit(obs)
        except Rejected as exc:
            # e.g. a profile that does not declare device_offline; the other devices still go.
            log.warning(
                "gateway event not accepted",
                extra={"device_id": device.device_id, "gateway": gateway, "code": exc.code},
            )
            continue
        if result.alert_id:
            touched.append(result.alert_id)
    return touched


# -- persistence --------------------------------------------------------------------------------------------
class WatchTable:
    """A small SQLite table of Watch rows. The store contract has no place for this yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        # Calls arrive from worker threads (asyncio.to_thread); a cancelled caller's write may still be
        # running when stop() closes the table, so every call holds this lock.
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        private_sqlite(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS supervision (device_id TEXT PRIMARY KEY, baseline TEXT NOT NULL,"
            " heard_at TEXT, silent_since TEXT, kind TEXT, alert_ids TEXT NOT NULL DEFAULT '[]')"
        )

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def load(self) -> dict[str, Watch]:
        with self._lock:
            assert self._db is not None
            rows = self._db.execute(
                "SELECT device_id, baseline, heard_at, silent_since, kind, alert_ids FROM supervision"
            ).fetchall()
        return {
            r[0]: Watch(r[0], _dt(r[1]) or utcnow(), _dt(r[2]), _dt(r[3]), r[4], list(json.loads(r[5]))) for r in rows
        }

    def save(self, w: Watch) -> None:
        row = (
            w.device_id, w.baseline.isoformat(), _iso(w.heard_at), _iso(w.silent_since), w.kind,
            json.dumps(w.alert_ids),
        )  # fmt: skip
        with self._lock:
            if self._db is None:
                return  # closed by stop() while this write was queued
            self._db.execute(
                "INSERT OR REPLACE INTO supervision (device_id, baseline, heard_at, silent_since, kind, alert_ids)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

    def delete(self, device_id: str) -> None:
        with self._lock:
            if self._db is not None:
                self._db.execute("DELETE FROM supervision WHERE device_id = ?", (device_id,))


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _dt(s: str | None) -> datetime | None:
    if s is None:
        return None
    t = datetime.fromisoformat(s)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# -- the loop -----------------------------------------------------------------------------------------------
class Supervisor:
    """`Supervisor(runtime)`; `await start()` after the runtime started, `await stop()` before it stops."""

    def __init__(
        self,
        runtime: SupervisedRuntime,
        *,
        grace_s: float | None = None,
        max_tick_s: float | None = None,
        db_path: str | Path | None = None,
    ) -> None:
        settings = runtime.settings
        self.store: Store = runtime.store
        # Supervision raises its alerts through the ingress, like every transport (same lanes, same admission).
        self.pipeline: Submitter = runtime.ingress.observations
        self.bus = runtime.bus
        self.profiles: ProfileRegistry = runtime.profiles
        if grace_s is None:
            grace_s = getattr(settings, "supervision_grace_s", DEFAULT_GRACE_S)
        self.grace_s = float(grace_s)
        self.max_tick_s = float(
            max_tick_s if max_tick_s is not None else getattr(settings, "supervision_tick_s", DEFAULT_MAX_TICK_S)
        )
        self.table = WatchTable(Path(db_path) if db_path else settings.data_path / "supervision.db")
        self.watches: dict[str, Watch] = {}
        self._own_alerts: set[str] = set()
        self._wake = asyncio.Event()
        # One pass at a time: two overlapping passes could both see a silence as not yet raised.
        self._tick_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.registry_refresh_s = float(getattr(settings, "supervision_registry_refresh_s", 60.0))
        self._scan_at: float | None = None
        self._scan_ids: list[str] = []

    async def start(self) -> None:
        await asyncio.to_thread(self.table.open)
        self.watches = await asyncio.to_thread(self.table.load)
        for w in self.watches.values():
            self._own_alerts.update(w.alert_ids)
        ready = asyncio.Event()
        listener = asyncio.create_task(self._listen(ready), name="supervision-bus")
        self._tasks = [listener]
        await await_ready(ready, listener, READY_TIMEOUT_S, "supervision's status-bus listener")
        self._tasks.append(asyncio.create_task(self._loop(), name="supervision"))
        log.info("supervision started", extra={"grace_s": self.grace_s, "max_tick_s": self.max_tick_s})

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks = []
        await asyncio.to_thread(self.table.close)

    async def _listen(self, ready: asyncio.Event) -> None:
        async with self.bus.subscribe() as queue:
            ready.set()
            while True:
                event = await queue.get()  # a service loop's wait: stop() cancels it
                if event.event not in DEVICE_EVENTS or event.alert_id in self._own_alerts:
                    continue
                watch = self.watches.get(event.device_id)
                if watch is not None and not await self._bridge_raised(event.alert_id):
                    watch.heard_at = utcnow()
                    await asyncio.to_thread(self.table.save, watch)
                    self._wake.set()

    async def _bridge_raised(self, alert_id: str) -> bool:
        """An alert the bridge raised about the device (here, in another supervisor, or from a gateway's
        last will) is not the device speaking."""
        try:
            alert = await self.store.get_alert(alert_id)
        except Exception:
            return True  # unknown: better a late check-in alarm than a silence hidden by a store error
        return alert is None or alert.kind in (AlertKind.check_in_missed, AlertKind.device_offline)

    async def _loop(self) -> None:
        while True:
            delay = self.max_tick_s
            try:
                next_due = await self.tick()
                if next_due is not None:
                    delay = min(delay, max(0.0, (next_due - utcnow()).total_seconds()))
            except Exception:
                # A store outage must not end supervision; the next tick tries again.
                log.exception("supervision tick failed")
            self._wake.clear()
            # Not asyncio.wait_for: on Python 3.11 it loses a stop()'s cancellation that arrives as the
            # bus listener wakes this loop, and stop() then waited for this task forever.
            await wait_event(self._wake, delay + 0.01)

    async def tick(self, now: datetime | None = None) -> datetime | None:
        """One pass over the registry; returns the earliest future deadline (for the loop's sleep)."""
        async with self._tick_lock:
            return await self._tick(now or utcnow())

    async def _supervised_devices(self) -> list[Device]:
        """Supervised devices and gateways, fresh from the store. Finding out *which* devices those are
        means reading the whole registry, so that scan runs at most every `registry_refresh_s`; the few
        devices it finds are re-read on every pass, since their last_seen is what the rules judge. The scan
        reads the registry a page at a time and keeps only those: a bridge with 20,000 devices held all of
        them as models at once (~100 MB resident, never given back to the system)."""
        if self._scan_at is None or time.monotonic() - self._scan_at > self.registry_refresh_s:
            kept: dict[str, Device] = {}
            gateways: set[str] = set()
            async for page in self.store.scan_devices():
                for d in page:
                    if d.gateway_id:
                        gateways.add(d.gateway_id)
                    if d.gateway_id or effective_interval(d, self.profiles.get(d.profile_id)) is not None:
                        kept[d.device_id] = d
            for gateway_id in sorted(gateways - kept.keys()):  # a gateway seen before its first child
                gateway = await self.store.get_device(gateway_id)
                if gateway is not None:
                    kept[gateway_id] = gateway
            self._scan_ids = sorted(kept)
            self._scan_at = time.monotonic()
            return [kept[device_id] for device_id in self._scan_ids]
        fresh = [await self.store.get_device(device_id) for device_id in self._scan_ids]
        return [d for d in fresh if d is not None]

    def rescan(self) -> None:
        """Read the whole registry on the next pass (after devices were added or changed)."""
        self._scan_at = None
        self._wake.set()

    async def _tick(self, now: datetime) -> datetime | None:
        devices = await self._supervised_devices()
        by_id = {d.device_id: d for d in devices}
        children = gateway_children(devices)
        supervised: list[tuple[Device, int]] = []
        for d in devices:
            profile = self.profiles.get(d.profile_id)
            interval = effective_interval(d, profile)
            if interval is not None:
                supervised.append((d, interval))
        # Gateways first, so the devices behind one that just went offline are suppressed in this pass.
        supervised.sort(key=lambda pair: pair[0].device_id not in children)
        next_due: datetime | None = None
        for device, interval in supervised:
            watch = self.watches.get(device.device_id)
            if watch is None:
                watch = self.watches[device.device_id] = Watch(device.device_id, baseline=now)
                await asyncio.to_thread(self.table.save, watch)
            gateway = by_id.get(device.gateway_id) if device.gateway_id else None
            behind_offline = gateway is not None and self._offline(gateway.device_id)
            decision = decide(device, interval, watch, now, self.grace_s, behind_offline)
            if decision.verdict == "raise":
                await self._raise(device, interval, watch, decision, is_gateway=device.device_id in children)
            elif decision.verdict == "recover":
                await self._recover(device, watch, decision, now)
            elif decision.verdict == "ok" and (next_due is None or decision.due_at < next_due):
                next_due = decision.due_at
        # Forget devices no longer supervised (removed, or interval unset), so a re-added one starts afresh.
        current = {d.device_id for d, _ in supervised}
        for device_id in [k for k, w in self.watches.items() if k not in current and w.silent_since is None]:
            del self.watches[device_id]
            await asyncio.to_thread(self.table.delete, device_id)
        return next_due

    def _offline(self, gateway_id: str) -> bool:
        watch = self.watches.get(gateway_id)
        return watch is not None and watch.silent_since is not None and watch.kind == AlertKind.device_offline.value

    async def _raise(
        self, device: Device, interval: int, watch: Watch, decision: Decision, *, is_gateway: bool
    ) -> None:
        heard = decision.heard.isoformat()
        silence = int(decision.silence_s)
        # The clock starts when supervision of the device began, if that is later than when it was last
        # heard (a device just registered, or first seen by this bridge): the reason says both.
        seen = max((t for t in (device.last_seen, watch.heard_at) if t is not None), default=None)
        now = decision.heard + timedelta(seconds=decision.silence_s)
        since = (f"; last heard {int((now - seen).total_seconds())} s ago, before supervision of it began"
                 if seen is not None and seen < decision.heard else "")
        alert_ids: list[str] = []
        if is_gateway:
            kind = AlertKind.device_offline
            alert_ids = await gateway_state_changed(
                self.store,
                self.pipeline,
                device.device_id,
                online=False,
                transport=TRANSPORT,
                reason=f"gateway {device.device_id!r} silent for {silence} s (expected every {interval} s)",
                message_id=f"device_offline:{heard}",
            )
        else:
            kind = AlertKind.check_in_missed
            obs = Observation(
                device_id=device.device_id,
                transport=TRANSPORT,
                action="alert",
                kind=kind,
                # The silence's identity: the same silence can never be raised twice, even after a restart.
                message_id=f"check_in_missed:{heard}",
                reason=f"no check-in for {silence} s (expected every {interval} s, grace {int(self.grace_s)} s)"
                       f"{since}",
                attributes={"check_in_interval_s": interval, "grace_s": self.grace_s, "last_heard": heard,
                            **({"last_seen": seen.isoformat()} if since and seen is not None else {})},
            )
            try:
                result = await self.pipeline.submit(obs)
                if result.alert_id:
                    alert_ids.append(result.alert_id)
            except Rejected as exc:
                # Recorded as raised all the same: retrying every tick would only repeat the rejection.
                log.warning("check_in_missed not accepted", extra={"device_id": device.device_id, "code": exc.code})
            except StoreError:
                log.error("check_in_missed not stored; will retry", extra={"device_id": device.device_id})
                return
        # No await between submit returning and this update: the bus listener cannot see our own alert first.
        self._own_alerts.update(alert_ids)
        watch.silent_since, watch.kind, watch.alert_ids = decision.heard, kind.value, alert_ids
        await asyncio.to_thread(self.table.save, watch)
        log.info(
            "silence raised",
            extra={"device_id": device.device_id, "kind": kind.value, "alert_ids": alert_ids, "silence_s": silence},
        )

    async def _recover(self, device: Device, watch: Watch, decision: Decision, now: datetime) -> None:
        assert watch.silent_since is not None
        silent_for = int((decision.heard - watch.silent_since).total_seconds())
        reason = f"device heard again after {silent_for} s of silence"
        restored: list[str] = []
        if watch.kind == AlertKind.device_offline.value:
            restored = await gateway_state_changed(
                self.store, self.pipeline, device.device_id, online=True, transport=TRANSPORT,
                reason=f"gateway {device.device_id!r} heard again after {silent_for} s of silence",
            )  # fmt: skip
        else:
            for alert_id in watch.alert_ids:
                alert = await self.store.get_alert(alert_id)
                if alert is None or not alert.is_open:
                    continue  # the platform already closed it; the audit row below still records recovery
                obs = Observation(
                    device_id=alert.device_id, transport=TRANSPORT, action="restore", alert_id=alert_id, reason=reason
                )
                try:
                    await self.pipeline.submit(obs)
                    restored.append(alert_id)
                except Rejected as exc:
                    log.warning("restore not accepted", extra={"alert_id": alert_id, "code": exc.code})
        detail = json.dumps(
            {"kind": watch.kind, "alerts": watch.alert_ids, "restored": restored, "silent_s": silent_for}
        )
        await self.store.audit(now, TRANSPORT, "recovered", device.device_id, detail)
        log.info("silence recovered", extra={"device_id": device.device_id, "alert_ids": restored})
        watch.silent_since, watch.kind, watch.alert_ids = None, None, []
        await asyncio.to_thread(self.table.save, watch)
