"""The store contract shared by the SQLite and Redis implementations.

Every method is async so a networked store fits behind it. `commit()` is the single write path for
alert changes: the alert row, its history entries, its outbox rows and its dedupe key are written in one
transaction, and only after it returns may an adapter acknowledge the device.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from bridge.core.model import Alert, Device, HistoryEntry, Location

OutboxState = Literal["pending", "inflight", "retry", "delivered", "dead", "cancelled"]


class StoreError(RuntimeError):
    """The store could not durably record a change; the device must not be acknowledged."""


class ConcurrentUpdate(Exception):
    """The alert changed since it was read (another instance or task wrote it); re-read and try again."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(alert_id)
        self.alert_id = alert_id


class DuplicateMessage(Exception):
    def __init__(self, alert_id: str) -> None:
        super().__init__(alert_id)
        self.alert_id = alert_id


@dataclass
class OutboxItem:
    item_id: str
    alert_id: str
    seq: int
    msg_type: str
    idempotency_key: str
    payload: str
    critical: bool
    state: OutboxState = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_until: float = 0.0
    last_error: str | None = None
    fallback_sent: bool = False
    created_at: float = 0.0
    route: str = "default"
    # The platform body as the route's sink rendered it when the row was queued (CAP XML, EIDO JSON,
    # PIDF-LO), stored with the row so every delivery attempt sends these exact bytes (UTF-8 text), and
    # the format it is in. None: the sink renders `payload` at delivery (JSON routes, whose body is the
    # payload; rows queued before the column existed).
    body: str | None = field(default=None, repr=False)
    body_format: str | None = None
    # In memory only, never stored: the alert as committed with this row, when the pipeline hands a fresh
    # row to the forwarder (saves re-reading it after delivery; a stale copy only costs a versioned retry).
    alert: Alert | None = field(default=None, repr=False, compare=False)
    # In memory only: the alert's stored document as the lease read it (a first contact's), so the
    # delivery that moves the alert to `forwarded` needs no point lookup of its own. None: not read.
    alert_doc: str | None = field(default=None, repr=False, compare=False)


def lease_rank(item: OutboxItem) -> tuple[bool, bool, float]:
    """The lease order as a sort key (the stores' `lease` returns rows in it): critical contacts first, among
    them a new alert's first contact, then the oldest."""
    return (not item.critical, item.msg_type != "alert", item.created_at)


@dataclass
class Change:
    """One atomic write: everything an accepted observation changes."""

    alert: Alert
    history: list[HistoryEntry] = field(default_factory=list)
    outbox: list[OutboxItem] = field(default_factory=list)
    dedupe_key: str | None = None
    # Further presses folded into this change (each one's key, so a redelivery of any is a duplicate).
    extra_dedupe_keys: list[str] = field(default_factory=list)
    device_location: tuple[str, Location] | None = None
    cancel_pending_outbox: bool = False
    # Coalesce: update contacts of this alert still waiting (pending/retry) are replaced by this change's
    # outbox rows, which carry the alert's whole current state.
    supersede_pending_updates: bool = False
    # The alert's version when it was read; the write fails with ConcurrentUpdate if it moved on since.
    # None for a new alert.
    expected_version: int | None = None
    # For a new alert: the device's most recent open alert as the writer saw it (None: none open). If
    # another instance opened one meanwhile the write fails with ConcurrentUpdate, and the re-applied
    # observation escalates that alert instead of opening a second one.
    check_open_alert: bool = False
    expected_open_alert: str | None = None
    # Small lifecycle writes (platform ack, delivered) that must not wait behind a flood of new alerts.
    urgent: bool = False
    # A new life-safety alert: committed ahead of escalations, locations and heartbeats already queued.
    first_alert: bool = False
    # Outbox rows delivered, recorded with the state change their delivery causes (one write, not two).
    delivered_items: list[str] = field(default_factory=list)
    delivered_at: float = 0.0


@dataclass
class CheckinRow:
    """A device's check-in timer as the store keeps it (bridge/alerts/checkin.py owns `doc`, its JSON).

    One row per device: a new timer replaces the device's previous one. `active` rows still need the
    timer loop (a reminder, an expiry, an alert still to raise), at `next_at`; `version` guards every write
    as for alerts (ConcurrentUpdate with the timer id); `lease_until` is the lease a loop took on the row."""

    device_id: str
    timer_id: str
    doc: str
    active: bool
    next_at: float
    version: int = 0
    lease_until: float = 0.0


@dataclass
class OutboxStats:
    pending: int = 0
    inflight: int = 0
    retry: int = 0
    delivered: int = 0
    dead: int = 0
    cancelled: int = 0
    critical_overdue: int = 0
    oldest_pending_age_s: float = 0.0


def hash_secret(secret: str) -> str:
    """Tokens are stored as SHA-256: they are long random strings, so a slow KDF buys nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


@runtime_checkable
class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    # Disk space the store holds but does not need, given back (SQLite: its write-ahead log checkpointed
    # and truncated); bytes freed, 0 where there is nothing to give. Called when the disk runs low.
    async def reclaim_space(self) -> int: ...

    # registry
    async def put_device(self, device: Device) -> None: ...
    # Many devices (and bearer tokens, stored hashed) in few round trips: the same effect as put_device
    # and set_credential(device_id, "token", ...) for each; for imports of thousands of devices.
    async def put_devices(self, devices: Sequence[Device], tokens: Mapping[str, str] | None = None) -> None: ...
    async def get_device(self, device_id: str) -> Device | None: ...
    async def list_devices(self, tenant_id: str | None = None) -> list[Device]: ...
    # Every device, a page of at most `batch` at a time (each device exactly once if the registry does not
    # change meanwhile): for scans of a large registry that must not hold all of it in memory at once.
    def scan_devices(self, batch: int = 500) -> AsyncIterator[list[Device]]: ...
    async def remove_device(self, device_id: str) -> bool: ...
    async def find_device(self, scheme: str, value: str) -> Device | None: ...
    async def touch_device(self, device_id: str, seen_at: datetime, location: Location | None) -> None: ...

    # credentials; `secret` is stored hashed unless hashed=False (keys the bridge must use itself)
    async def set_credential(self, device_id: str, scheme: str, secret: str, hashed: bool = True) -> None: ...
    async def get_credential(self, device_id: str, scheme: str) -> str | None: ...
    async def device_for_token(self, token: str) -> Device | None: ...

    # alerts
    async def commit(self, change: Change) -> None: ...
    async def get_alert(self, alert_id: str) -> Alert | None: ...
    async def open_alert_for_device(self, device_id: str) -> Alert | None: ...
    async def history(self, alert_id: str) -> list[HistoryEntry]: ...
    # Bookkeeping about an alert that changes neither the alert nor its outbox (a text message's delivery
    # over a device channel): appended after the alert's other history, in order. A no-op for an alert
    # that does not exist.
    async def append_history(self, alert_id: str, entries: Sequence[HistoryEntry]) -> None: ...
    # The alerts that stored dedupe keys name, by key (keys never stored are left out): one read for a
    # backlog's presses, whatever their number.
    async def alerts_for_dedupe(self, dedupe_keys: Sequence[str]) -> dict[str, str]: ...
    async def contact_sent(self, alert_id: str) -> bool: ...

    # outbox
    async def lease(self, limit: int, lease_s: float, now: float) -> list[OutboxItem]: ...
    async def mark_delivered(self, item_id: str, now: float) -> None: ...
    async def reschedule(self, item_id: str, next_attempt_at: float, error: str, attempts: int) -> None: ...
    async def mark_dead(self, item_id: str, error: str, attempts: int) -> None: ...
    async def mark_fallback_sent(self, item_id: str) -> None: ...
    async def outbox_stats(self, now: float, overdue_attempts: int) -> OutboxStats: ...
    async def outbox_items(self, alert_id: str) -> list[OutboxItem]: ...

    # check-in timers (docs/operations/checkin.md): one row per device, versioned writes, leased steps.
    # `put_checkin` writes the device's row if its stored version is `expected_version` (None: the device
    # has no row yet), else raises ConcurrentUpdate(timer_id); it drops any lease and returns the new
    # version (1 for a first row). `lease_checkins` takes up to `limit` active rows due at `now`
    # whose lease is free or expired, leased until now + lease_s (one instance steps a timer at a time).
    async def put_checkin(self, row: CheckinRow, expected_version: int | None) -> int: ...
    async def get_checkin(self, device_id: str) -> CheckinRow | None: ...
    async def lease_checkins(self, now: float, lease_s: float, limit: int) -> list[CheckinRow]: ...
    # When the earliest active row is next due or its lease ends (None: no active row).
    async def next_checkin_at(self) -> float | None: ...

    # retention: closed alerts (and their history, contacts and dedupe keys) received before `before`
    async def purge_closed(self, before: datetime) -> int: ...

    # audit
    async def audit(self, at: datetime, actor: str, action: str, subject: str, detail: str = "") -> None: ...
