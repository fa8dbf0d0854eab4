"""Embedded SQLite store: WAL journal, synchronous=FULL, one transaction per accepted change.

All access goes through one worker thread that owns the connection, so writes are serialised without
locks in the event loop and a slow fsync never blocks it.

Group commit: the writes made in one turn of the event loop, and those that queue up while the thread
is busy (an fsync), run together in one transaction (rows serialised by the caller, bound with prepared
statements and `executemany`), each inside its own SAVEPOINT so one failing write (a duplicate message)
rolls back alone.
Every caller is answered only after the COMMIT that holds its rows has returned, so "acknowledge the
device after its row is durable" still holds; the batch only shares the fsync.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bridge.core.model import STORED, Alert, Device, HistoryEntry, Location
from bridge.infra.private_files import private_sqlite
from bridge.store.base import (
    Change,
    CheckinRow,
    ConcurrentUpdate,
    DuplicateMessage,
    OutboxItem,
    OutboxStats,
    StoreError,
    hash_secret,
    lease_rank,
)

T = TypeVar("T")

# Writes per group commit; bounds the time one transaction holds the write lock, and so how long an urgent
# write (the forwarder's lease, a delivery's record, a platform's ack) waits behind the intake's transaction
# in flight under a flood: 40-50 ms at 64, 125-150 ms at 256 (docs/testing/benchmarks.md#delivery-in-step).
MAX_BATCH = 64
LOOKUP_CHUNK = 500  # keys per `IN (...)` lookup, well under SQLite's bound on variables
# What a checkpoint leaves of a write-ahead log that a long read let grow past SQLite's auto-checkpoint
# size (1,000 pages, 4 MiB): SQLite keeps the file at its largest unless told otherwise.
WAL_SIZE_LIMIT = 4 * 1024 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identifiers (
  scheme TEXT NOT NULL, value TEXT NOT NULL, device_id TEXT NOT NULL,
  PRIMARY KEY (scheme, value)
);
CREATE TABLE IF NOT EXISTS credentials (
  device_id TEXT NOT NULL, scheme TEXT NOT NULL, secret TEXT NOT NULL, hashed INTEGER NOT NULL,
  PRIMARY KEY (device_id, scheme)
);
CREATE INDEX IF NOT EXISTS credentials_secret ON credentials (scheme, secret);
CREATE TABLE IF NOT EXISTS alerts (
  alert_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  state TEXT NOT NULL,
  is_open INTEGER NOT NULL,
  received_at TEXT NOT NULL,
  doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (device_id, is_open, received_at);
CREATE TABLE IF NOT EXISTS history (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  alert_id TEXT NOT NULL, at TEXT NOT NULL, event TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_alert ON history (alert_id, id);
CREATE TABLE IF NOT EXISTS outbox (
  item_id TEXT PRIMARY KEY,
  alert_id TEXT NOT NULL, seq INTEGER NOT NULL, msg_type TEXT NOT NULL,
  idempotency_key TEXT NOT NULL, payload TEXT NOT NULL, critical INTEGER NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at REAL NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0,
  last_error TEXT, fallback_sent INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
  route TEXT NOT NULL DEFAULT 'default'
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
DROP INDEX IF EXISTS outbox_ready;
CREATE INDEX IF NOT EXISTS outbox_ready_first ON outbox (critical DESC, (msg_type = 'alert') DESC, created_at)
  WHERE state IN ('pending', 'retry');
CREATE UNIQUE INDEX IF NOT EXISTS outbox_key ON outbox (route, idempotency_key);
CREATE INDEX IF NOT EXISTS outbox_alert ON outbox (alert_id, route, seq);
-- An alert's contacts still waiting: what a cancel or a superseding update replaces. Without it each such
-- write scanned every contact the alert ever had (a flooding device's thousands of superseded updates:
-- quadratic, and the one writer thread busy while other devices' alerts waited; issue 27).
CREATE INDEX IF NOT EXISTS outbox_alert_waiting ON outbox (alert_id, msg_type) WHERE state IN ('pending', 'retry');
CREATE TABLE IF NOT EXISTS dedupe (
  key TEXT PRIMARY KEY, alert_id TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL
);
"""

# Check-in timers: one row per device (bridge/alerts/checkin.py), kept apart from the alert tables.
CHECKIN_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkins (
  device_id TEXT PRIMARY KEY, timer_id TEXT NOT NULL, doc TEXT NOT NULL, active INTEGER NOT NULL,
  next_at REAL NOT NULL, version INTEGER NOT NULL, lease_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS checkins_due ON checkins (next_at) WHERE active = 1;
"""
_CHECKIN_COLS = "device_id, timer_id, doc, active, next_at, version, lease_until"


def _checkin_row(row: sqlite3.Row) -> CheckinRow:
    return CheckinRow(row["device_id"], row["timer_id"], row["doc"], bool(row["active"]), row["next_at"],
                      row["version"], row["lease_until"])


_OUTBOX_COLS = (
    "item_id, alert_id, seq, msg_type, idempotency_key, payload, critical, state, attempts, "
    "next_attempt_at, lease_until, last_error, fallback_sent, created_at, route, body, body_format"
)

# A contact waits while an earlier one of the same alert on the same route is still undelivered.
# Critical first, then new alerts ahead of updates: a flood of escalations never delays a first contact.
# (outbox_ready_first walks due rows in exactly this order, so a lease stops at `limit`.)
_LEASE_ORDER = "o.critical DESC, (o.msg_type = 'alert') DESC, o.created_at"
_NO_EARLIER_OPEN = (
    "NOT EXISTS (SELECT 1 FROM outbox p WHERE p.alert_id = o.alert_id AND p.route = o.route "
    "AND p.seq < o.seq AND p.state IN ('pending', 'retry', 'inflight'))"
)


def _mark_delivered(c: sqlite3.Connection, item_id: str, now: float) -> None:
    c.execute(_SQL_MARK_DELIVERED, (now, item_id))


# The commit path's statements, prepared once: sqlite3 caches a statement by its text.
_SQL_VERSION = "SELECT json_extract(doc, '$.version') FROM alerts WHERE alert_id = ?"
_SQL_OPEN_ALERT = (
    "SELECT alert_id FROM alerts WHERE device_id = ? AND is_open = 1 ORDER BY received_at DESC LIMIT 1"
)
_SQL_OPEN_DEVICES = "SELECT DISTINCT device_id FROM alerts WHERE is_open = 1"
_SQL_DEDUPE_GET = "SELECT alert_id FROM dedupe WHERE key = ?"
_SQL_DEDUPE_PUT = "INSERT INTO dedupe (key, alert_id, at) VALUES (?, ?, ?)"
_SQL_DEDUPE_PUT_IGNORE = "INSERT OR IGNORE INTO dedupe (key, alert_id, at) VALUES (?, ?, ?)"
_SQL_ALERT_PUT = (
    "INSERT INTO alerts (alert_id, device_id, state, is_open, received_at, doc) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(alert_id) DO UPDATE SET "
    "state=excluded.state, is_open=excluded.is_open, doc=excluded.doc"
)
_SQL_HISTORY_PUT = "INSERT INTO history (alert_id, at, event, state, detail) VALUES (?, ?, ?, ?, ?)"
_SQL_CANCEL_PENDING = "UPDATE outbox SET state = 'cancelled' WHERE alert_id = ? AND state IN ('pending', 'retry')"
_SQL_SUPERSEDE_UPDATES = (
    "UPDATE outbox SET state = 'cancelled' WHERE alert_id = ? AND msg_type = 'update' "
    "AND state IN ('pending', 'retry')"
)
_SQL_OUTBOX_PUT = f"INSERT INTO outbox ({_OUTBOX_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_SQL_MARK_DELIVERED = (
    "UPDATE outbox SET state = 'delivered', last_error = NULL, attempts = attempts + 1, lease_until = ? "
    "WHERE item_id = ?"
)
_SQL_LEASE = "UPDATE outbox SET state = 'inflight', lease_until = ? WHERE item_id = ?"
_SQL_ALERT_DOC = "SELECT doc FROM alerts WHERE alert_id = ?"
_SQL_DEVICE_LOCATION = (
    "UPDATE devices SET doc = json_set(doc, '$.last_location', json(?), '$.last_seen', json(?)) "
    "WHERE device_id = ?"
)


def _item_row(item: OutboxItem, now: float) -> tuple[Any, ...]:
    return (item.item_id, item.alert_id, item.seq, item.msg_type, item.idempotency_key, item.payload,
            int(item.critical), item.state, item.attempts, item.next_attempt_at, item.lease_until,
            item.last_error, int(item.fallback_sent), item.created_at or now, item.route, item.body,
            item.body_format)


def _row_to_item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        item_id=row["item_id"],
        alert_id=row["alert_id"],
        seq=row["seq"],
        msg_type=row["msg_type"],
        idempotency_key=row["idempotency_key"],
        payload=row["payload"],
        critical=bool(row["critical"]),
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        lease_until=row["lease_until"],
        last_error=row["last_error"],
        fallback_sent=bool(row["fallback_sent"]),
        created_at=row["created_at"],
        route=row["route"],
        body=row["body"],
        body_format=row["body_format"],
    )


# -- outbox body columns (rendered when queued) ----------------------------------------------------------
# Columns added to `outbox` after databases were already in use. Every open adds whichever is missing
# (new and old databases take the same path); a column added with ALTER TABLE is NULL in existing rows,
# and a NULL body is rendered at delivery as before.
_OUTBOX_ADDED_COLUMNS = (("body", "TEXT"), ("body_format", "TEXT"))


def _migrate_outbox_body(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    for name, kind in _OUTBOX_ADDED_COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE outbox ADD COLUMN {name} {kind}")


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None
        # Reads use their own connection and thread: under WAL they run while the writer waits on an
        # fsync, instead of queueing behind it. Every write is awaited before its caller reads again, so
        # a read never misses a write the same flow made. (":memory:" has one database per connection.)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read")
        self._rconn: sqlite3.Connection | None = None
        self._lconn: sqlite3.Connection | None = None  # the event loop's own, for point lookups
        # Writes waiting for the next group commit, and whether a flush is already queued on the thread.
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._urgent: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._first: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._pending_lock = threading.Lock()
        self._flush_queued = False
        # Devices that may have an open alert, each with the number of its latest mark (issue 27: no point
        # lookup on the loop for a device's first alert). A device not in it has none: loaded at open,
        # marked before every commit that writes an open alert (or that lost a race to another writer),
        # removed once the commit closing its last open alert saw none left. If another process writes
        # alerts behind it, the new-alert commit's own check (in the transaction) refuses, and the retry
        # reads. None until open: every lookup reads.
        self._maybe_open: dict[str, int] | None = None
        self._open_marks = 0

    # -- plumbing -------------------------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()

        def call() -> T:
            if self._conn is None:
                raise StoreError("store is not open")
            try:
                return fn(self._conn)
            except (DuplicateMessage, StoreError):
                raise
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc

        return await loop.run_in_executor(self._executor, call)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.path == ":memory:":
            return await self._run(fn)
        loop = asyncio.get_running_loop()

        def call() -> T:
            if self._rconn is None:
                raise StoreError("store is not open")
            try:
                return fn(self._rconn)
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc

        return await loop.run_in_executor(self._reader, call)

    async def _lookup(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A point lookup by primary key or index, run right here on the event loop's own read connection.

        Under WAL a reader never waits for the writer, and an indexed lookup takes tens of microseconds:
        far less than the two thread hand-offs (and GIL switches) a trip through the reader thread costs,
        which profiling showed dominating the per-alert cost under load. Scans still use `_read`.
        """
        conn = self._lconn
        if conn is None:
            return await self._read(fn)
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return await self._read(fn)  # never wait on the loop: the reader thread may
            raise StoreError(f"sqlite: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _connect_reader(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA query_only=ON")
        self._rconn = conn
        # A lookup on the loop must never sleep in SQLite's busy handler: 20 ms, then the reader thread.
        lconn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.02)
        lconn.row_factory = sqlite3.Row
        lconn.execute("PRAGMA query_only=ON")
        self._lconn = lconn

    async def _write(self, fn: Callable[[sqlite3.Connection], T], urgent: bool = False, first: bool = False) -> T:
        """Run `fn` in the next group commit; returns once that commit is durable.

        `urgent` writes (the forwarder's bookkeeping, platform acknowledgements) go ahead of queued
        ingest, so a flood of new alerts cannot starve the delivery of the ones already stored; `first`
        writes (a new life-safety alert) go ahead of escalations, locations and heartbeats.
        """
        if self._conn is None:
            # Closed: a write queued now would wait for a flush that never comes.
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._pending_lock:
            (self._urgent if urgent else self._first if first else self._pending).append((fn, future))
            queue_flush = not self._flush_queued
            self._flush_queued = True
        if queue_flush:
            # Not now: at the end of this turn of the loop, so every write this turn makes (one per
            # message the adapter read in one go) goes into the same transaction and shares its fsync.
            loop.call_soon(self._executor.submit, self._flush)
        return await future

    def _flush(self) -> None:
        with self._pending_lock:
            batch, self._urgent = self._urgent[:MAX_BATCH], self._urgent[MAX_BATCH:]
            room = MAX_BATCH - len(batch)
            batch += self._first[:room]
            self._first = self._first[room:]
            room = MAX_BATCH - len(batch)
            batch += self._pending[:room]
            self._pending = self._pending[room:]
            more = bool(self._pending or self._urgent or self._first)
            self._flush_queued = more
        if more:
            # The rest go in the next transaction, queued behind any reads that arrived meanwhile.
            self._executor.submit(self._flush)
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        conn = self._conn
        try:
            if conn is None:
                raise StoreError("store is not open")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for fn, future in batch:
                    conn.execute("SAVEPOINT w")
                    try:
                        value = fn(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO w")
                        conn.execute("RELEASE w")
                        if isinstance(exc, sqlite3.Error):
                            exc = StoreError(f"sqlite: {exc}")
                        results.append((future, None, exc))
                        continue
                    conn.execute("RELEASE w")
                    results.append((future, value, None))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            # Nothing in this batch is durable: every caller hears so (the device is not acknowledged).
            failure = exc if isinstance(exc, StoreError) else StoreError(f"sqlite: {exc}")
            results = [(future, None, failure) for _fn, future in batch]
        # One wake-up of the loop for the whole batch, not one self-pipe write per caller.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for result in results:
            by_loop.setdefault(result[0].get_loop(), []).append(result)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting any more

    def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            private_sqlite(self.path)  # 0600 whatever the umask: keys, names and phone numbers live here
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        conn.executescript(SCHEMA)
        conn.executescript(CHECKIN_SCHEMA)
        self._conn = conn

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connect)
        await self._run(_migrate_outbox_body)  # before any reader: columns added since the database was made
        if self.path != ":memory:":
            await loop.run_in_executor(self._reader, self._connect_reader)
        rows = await self._run(lambda c: c.execute(_SQL_OPEN_DEVICES).fetchall())
        self._maybe_open = {row[0]: 0 for row in rows}

    def _mark_open(self, device_id: str) -> int:
        self._open_marks += 1
        if self._maybe_open is not None:
            self._maybe_open[device_id] = self._open_marks
        return self._open_marks

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, conn.close)
        lconn, self._lconn = self._lconn, None
        if lconn is not None:
            lconn.close()
        rconn, self._rconn = self._rconn, None
        if rconn is not None:
            await asyncio.get_running_loop().run_in_executor(self._reader, rconn.close)
        self._executor.shutdown(wait=False)
        self._reader.shutdown(wait=False)

    async def ping(self) -> bool:
        return await self._run(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)

    async def reclaim_space(self) -> int:
        """Checkpoint the write-ahead log into the database and truncate it to nothing; bytes freed.

        The runtime calls it when the disk runs low (bridge/app/disk_alarm.py): up to 4 MiB of the log are
        pages the database file already has, or has room for. It runs on the writer's thread between two
        group commits and waits at most 100 ms for readers to move on; if they have not, nothing is
        truncated this time (the health loop asks again a second later). A checkpoint that cannot write
        (the disk is full) fails with StoreError and changes nothing.
        """
        if self.path == ":memory:":
            return 0
        wal = Path(self.path + "-wal")

        def size() -> int:
            try:
                return wal.stat().st_size
            except FileNotFoundError:
                return 0

        def body(c: sqlite3.Connection) -> int:
            before = size()
            c.execute("PRAGMA busy_timeout=100")
            try:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                c.execute("PRAGMA busy_timeout=30000")
            return max(0, before - size())

        return await self._run(body)

    @staticmethod
    def _tx(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- registry -------------------------------------------------------------------------------------
    async def put_device(self, device: Device) -> None:
        def body(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO devices (device_id, tenant_id, doc) VALUES (?, ?, ?) "
                "ON CONFLICT(device_id) DO UPDATE SET tenant_id=excluded.tenant_id, doc=excluded.doc",
                (device.device_id, device.tenant_id, device.model_dump_json()),
            )
            c.execute("DELETE FROM identifiers WHERE device_id = ?", (device.device_id,))
            for scheme, value in device.identifiers.items():
                c.execute(
                    "INSERT OR REPLACE INTO identifiers (scheme, value, device_id) VALUES (?, ?, ?)",
                    (scheme, value, device.device_id),
                )

        await self._write(body)

    async def put_devices(self, devices: Sequence[Device], tokens: Mapping[str, str] | None = None) -> None:
        """One transaction for the whole batch (one fsync), rather than one per device."""
        ids = [(d.device_id,) for d in devices]
        creds = [(device_id, "token", hash_secret(token), 1) for device_id, token in (tokens or {}).items()]

        def body(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT INTO devices (device_id, tenant_id, doc) VALUES (?, ?, ?) "
                "ON CONFLICT(device_id) DO UPDATE SET tenant_id=excluded.tenant_id, doc=excluded.doc",
                [(d.device_id, d.tenant_id, d.model_dump_json()) for d in devices],
            )
            c.executemany("DELETE FROM identifiers WHERE device_id = ?", ids)
            c.executemany(
                "INSERT OR REPLACE INTO identifiers (scheme, value, device_id) VALUES (?, ?, ?)",
                [(scheme, value, d.device_id) for d in devices for scheme, value in d.identifiers.items()],
            )
            c.executemany(
                "INSERT OR REPLACE INTO credentials (device_id, scheme, secret, hashed) VALUES (?, ?, ?, ?)", creds
            )

        await self._write(body)

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._lookup(
            lambda c: c.execute("SELECT doc FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        )
        return Device.model_validate_json(row["doc"], context=STORED) if row else None

    async def list_devices(self, tenant_id: str | None = None) -> list[Device]:
        def q(c: sqlite3.Connection) -> list[Any]:
            if tenant_id is None:
                return c.execute("SELECT doc FROM devices ORDER BY device_id").fetchall()
            return c.execute("SELECT doc FROM devices WHERE tenant_id = ? ORDER BY device_id", (tenant_id,)).fetchall()

        return [Device.model_validate_json(r["doc"], context=STORED) for r in await self._read(q)]

    async def scan_devices(self, batch: int = 500) -> AsyncIterator[list[Device]]:
        """Pages in device-id order (keyset on the primary key): memory holds one page, not the registry."""
        after = ""
        while True:
            def page(c: sqlite3.Connection, after: str = after) -> list[Any]:
                return c.execute("SELECT device_id, doc FROM devices WHERE device_id > ? ORDER BY device_id LIMIT ?",
                                 (after, batch)).fetchall()

            rows = await self._read(page)
            if rows:
                yield [Device.model_validate_json(r["doc"]) for r in rows]
            if len(rows) < batch:
                return
            after = rows[-1]["device_id"]

    async def remove_device(self, device_id: str) -> bool:
        def body(c: sqlite3.Connection) -> bool:
            n = c.execute("DELETE FROM devices WHERE device_id = ?", (device_id,)).rowcount
            c.execute("DELETE FROM identifiers WHERE device_id = ?", (device_id,))
            c.execute("DELETE FROM credentials WHERE device_id = ?", (device_id,))
            return n > 0

        return await self._write(body)

    async def find_device(self, scheme: str, value: str) -> Device | None:
        row = await self._lookup(
            lambda c: c.execute(
                "SELECT d.doc FROM identifiers i JOIN devices d ON d.device_id = i.device_id "
                "WHERE i.scheme = ? AND i.value = ?",
                (scheme, value),
            ).fetchone()
        )
        return Device.model_validate_json(row["doc"], context=STORED) if row else None

    async def touch_device(self, device_id: str, seen_at: datetime, location: Location | None) -> None:
        def body(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT doc FROM devices WHERE device_id = ?", (device_id,)).fetchone()
            if row is None:
                return
            device = Device.model_validate_json(row["doc"], context=STORED)
            device.last_seen = seen_at
            if location is not None and location.has_coordinates:
                device.last_location = location
            c.execute("UPDATE devices SET doc = ? WHERE device_id = ?", (device.model_dump_json(), device_id))

        await self._write(body)

    async def set_credential(self, device_id: str, scheme: str, secret: str, hashed: bool = True) -> None:
        stored = hash_secret(secret) if hashed else secret
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO credentials (device_id, scheme, secret, hashed) VALUES (?, ?, ?, ?)",
                (device_id, scheme, stored, int(hashed)),
            )
        )

    async def get_credential(self, device_id: str, scheme: str) -> str | None:
        row = await self._lookup(
            lambda c: c.execute(
                "SELECT secret FROM credentials WHERE device_id = ? AND scheme = ?", (device_id, scheme)
            ).fetchone()
        )
        return row["secret"] if row else None

    async def device_for_token(self, token: str) -> Device | None:
        digest = hash_secret(token)
        row = await self._lookup(
            lambda c: c.execute(
                "SELECT d.doc FROM credentials k JOIN devices d ON d.device_id = k.device_id "
                "WHERE k.scheme = 'token' AND k.secret = ? AND k.hashed = 1",
                (digest,),
            ).fetchone()
        )
        return Device.model_validate_json(row["doc"], context=STORED) if row else None

    # -- alerts ---------------------------------------------------------------------------------------
    async def commit(self, change: Change) -> None:
        """Everything is serialised here, on the caller's side: the writer thread only binds prepared
        rows (`executemany`), so a batch holds the write lock for SQL alone, never a pydantic dump."""
        alert = change.alert
        alert_id = alert.alert_id
        now = time.time()
        alert_row = (alert_id, alert.device_id, alert.state.value, int(alert.is_open),
                     alert.received_at.isoformat(), alert.model_dump_json())
        history_rows = [(alert_id, h.at.isoformat(), h.event, h.state.value, json.dumps(h.detail))
                        for h in change.history]
        outbox_rows = [_item_row(item, now) for item in change.outbox]
        extra_keys = [(key, alert_id, now) for key in change.extra_dedupe_keys]
        delivered = [(change.delivered_at, item_id) for item_id in change.delivered_items]
        location_row: tuple[str, str, str] | None = None
        if change.device_location is not None:
            device_id, loc = change.device_location
            location_row = (loc.model_dump_json(), json.dumps(alert.updated_at.isoformat()), device_id)

        device_id_ = alert.device_id
        known = self._maybe_open
        mark = self._mark_open(device_id_) if alert.is_open else (known.get(device_id_) if known else None)

        def body(c: sqlite3.Connection) -> bool:
            if change.expected_version is not None:
                row = c.execute(_SQL_VERSION, (alert_id,)).fetchone()
                if row is None or (row[0] or 0) != change.expected_version:
                    raise ConcurrentUpdate(alert_id)
            if change.check_open_alert:
                row = c.execute(_SQL_OPEN_ALERT, (alert.device_id,)).fetchone()
                if (row[0] if row else None) != change.expected_open_alert:
                    raise ConcurrentUpdate(alert_id)
            if change.dedupe_key is not None:
                existing = c.execute(_SQL_DEDUPE_GET, (change.dedupe_key,)).fetchone()
                if existing is not None:
                    raise DuplicateMessage(existing[0])
                c.execute(_SQL_DEDUPE_PUT, (change.dedupe_key, alert_id, now))
            if extra_keys:
                c.executemany(_SQL_DEDUPE_PUT_IGNORE, extra_keys)
            c.execute(_SQL_ALERT_PUT, alert_row)
            if history_rows:
                c.executemany(_SQL_HISTORY_PUT, history_rows)
            if change.cancel_pending_outbox:
                c.execute(_SQL_CANCEL_PENDING, (alert_id,))
            elif change.supersede_pending_updates:
                c.execute(_SQL_SUPERSEDE_UPDATES, (alert_id,))
            if outbox_rows:
                c.executemany(_SQL_OUTBOX_PUT, outbox_rows)
            if delivered:
                c.executemany(_SQL_MARK_DELIVERED, delivered)
            if location_row is not None:
                # In SQL, on the stored document: no read and no model on the writer thread.
                c.execute(_SQL_DEVICE_LOCATION, location_row)
            # Closing an alert: whether the device has any open one left, as of this transaction.
            return not alert.is_open and c.execute(_SQL_OPEN_ALERT, (alert.device_id,)).fetchone() is None

        try:
            none_left = await self._write(body, urgent=change.urgent, first=change.first_alert)
        except ConcurrentUpdate:
            self._mark_open(device_id_)  # another writer moved it: its next lookups read the store
            raise
        known = self._maybe_open
        if none_left and known is not None and mark is not None and known.get(device_id_) == mark:
            del known[device_id_]  # nothing marked it since: its next first alert needs no lookup

    async def get_alert(self, alert_id: str) -> Alert | None:
        row = await self._lookup(
            lambda c: c.execute("SELECT doc FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        )
        return Alert.model_validate_json(row["doc"], context=STORED) if row else None

    async def open_alert_for_device(self, device_id: str) -> Alert | None:
        if self._maybe_open is not None and device_id not in self._maybe_open:
            return None  # no open alert (see `_maybe_open`): no lookup
        row = await self._lookup(
            lambda c: c.execute(
                "SELECT doc FROM alerts WHERE device_id = ? AND is_open = 1 ORDER BY received_at DESC LIMIT 1",
                (device_id,),
            ).fetchone()
        )
        return Alert.model_validate_json(row["doc"], context=STORED) if row else None

    async def history(self, alert_id: str) -> list[HistoryEntry]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT at, event, state, detail FROM history WHERE alert_id = ? ORDER BY id", (alert_id,)
            ).fetchall()
        )
        return [
            HistoryEntry(
                at=datetime.fromisoformat(r["at"]),
                event=r["event"],
                state=r["state"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]

    async def append_history(self, alert_id: str, entries: Sequence[HistoryEntry]) -> None:
        rows = [(alert_id, h.at.isoformat(), h.event, h.state.value, json.dumps(h.detail)) for h in entries]

        def body(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone() is None:
                return
            c.executemany("INSERT INTO history (alert_id, at, event, state, detail) VALUES (?, ?, ?, ?, ?)", rows)

        if rows:
            await self._write(body, urgent=True)

    async def alerts_for_dedupe(self, dedupe_keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(dedupe_keys), LOOKUP_CHUNK):
            chunk = list(dedupe_keys[start:start + LOOKUP_CHUNK])

            def read(c: sqlite3.Connection, chunk: list[str] = chunk) -> list[sqlite3.Row]:
                marks = ",".join("?" * len(chunk))
                return c.execute(f"SELECT key, alert_id FROM dedupe WHERE key IN ({marks})", chunk).fetchall()

            found.update((row["key"], row["alert_id"]) for row in await self._lookup(read))
        return found

    async def contact_sent(self, alert_id: str) -> bool:
        row = await self._lookup(
            lambda c: c.execute(
                "SELECT 1 FROM outbox WHERE alert_id = ? AND (state IN ('delivered', 'inflight') OR attempts > 0) "
                "AND route NOT LIKE 'notify:%' LIMIT 1",  # emergency contacts' rows are not the platform's
                (alert_id,),
            ).fetchone()
        )
        return row is not None

    # -- outbox ---------------------------------------------------------------------------------------
    async def lease(self, limit: int, lease_s: float, now: float) -> list[OutboxItem]:
        def body(c: sqlite3.Connection) -> list[OutboxItem]:
            # Two indexed queries instead of one OR: due rows walk outbox_ready_first in priority order and stop
            # at `limit`, so a lease costs the same with 10 or 10,000 contacts queued (the OR form sorted
            # the whole backlog on every lease). The top `limit` of the union is the top of both tops.
            params = {"now": now, "limit": limit}
            due = c.execute(
                f"SELECT {_OUTBOX_COLS} FROM outbox o INDEXED BY outbox_ready_first "
                "WHERE o.state IN ('pending', 'retry') AND o.next_attempt_at <= :now "
                f"AND {_NO_EARLIER_OPEN} ORDER BY {_LEASE_ORDER} LIMIT :limit",
                params,
            ).fetchall()
            expired = c.execute(
                f"SELECT {_OUTBOX_COLS} FROM outbox o WHERE o.state = 'inflight' AND o.lease_until < :now "
                f"AND {_NO_EARLIER_OPEN} ORDER BY {_LEASE_ORDER} LIMIT :limit",
                params,
            ).fetchall()
            items = sorted((_row_to_item(r) for r in [*due, *expired]), key=lease_rank)[:limit]
            for item in items:
                item.state = "inflight"
                item.lease_until = now + lease_s
            c.executemany(_SQL_LEASE, [(item.lease_until, item.item_id) for item in items])
            # First contacts carry their alert's document: their delivery moves the alert to `forwarded`
            # without a read on the event loop (parsed there only when it is needed).
            for item in items:
                if item.msg_type == "alert":
                    doc = c.execute(_SQL_ALERT_DOC, (item.alert_id,)).fetchone()
                    item.alert_doc = doc[0] if doc else None
            return items

        return await self._write(body, urgent=True)

    async def mark_delivered(self, item_id: str, now: float) -> None:
        await self._write(lambda c: _mark_delivered(c, item_id, now), urgent=True)

    async def reschedule(self, item_id: str, next_attempt_at: float, error: str, attempts: int) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE outbox SET state = 'retry', next_attempt_at = ?, last_error = ?, attempts = ? "
                "WHERE item_id = ? AND state = 'inflight'",
                (next_attempt_at, error[:500], attempts, item_id),
            ),
            urgent=True,
        )

    async def mark_dead(self, item_id: str, error: str, attempts: int) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE outbox SET state = 'dead', last_error = ?, attempts = ? WHERE item_id = ?",
                (error[:500], attempts, item_id),
            ),
            urgent=True,
        )

    async def mark_fallback_sent(self, item_id: str) -> None:
        await self._write(
            lambda c: c.execute("UPDATE outbox SET fallback_sent = 1 WHERE item_id = ?", (item_id,)), urgent=True
        )

    async def outbox_stats(self, now: float, overdue_attempts: int) -> OutboxStats:
        def q(c: sqlite3.Connection) -> OutboxStats:
            stats = OutboxStats()
            for r in c.execute("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state"):
                setattr(stats, r["state"], r["n"])
            stats.critical_overdue = c.execute(
                "SELECT COUNT(*) FROM outbox WHERE critical = 1 AND state IN ('retry', 'inflight', 'pending') "
                "AND attempts >= ?",
                (overdue_attempts,),
            ).fetchone()[0]
            oldest = c.execute(
                "SELECT MIN(created_at) FROM outbox WHERE state IN ('pending', 'retry', 'inflight')"
            ).fetchone()[0]
            stats.oldest_pending_age_s = max(0.0, now - oldest) if oldest else 0.0
            return stats

        return await self._read(q)

    async def outbox_items(self, alert_id: str) -> list[OutboxItem]:
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_OUTBOX_COLS} FROM outbox WHERE alert_id = ? ORDER BY seq", (alert_id,)
            ).fetchall()
        )
        return [_row_to_item(r) for r in rows]

    async def purge_closed(self, before: datetime) -> int:
        def body(c: sqlite3.Connection) -> int:
            ids = [
                r["alert_id"]
                for r in c.execute(
                    "SELECT alert_id FROM alerts WHERE is_open = 0 AND received_at < ?", (before.isoformat(),)
                )
            ]
            for alert_id in ids:
                c.execute("DELETE FROM history WHERE alert_id = ?", (alert_id,))
                c.execute(
                    "DELETE FROM outbox WHERE alert_id = ? AND state IN ('delivered', 'dead', 'cancelled')", (alert_id,)
                )
                c.execute("DELETE FROM dedupe WHERE alert_id = ?", (alert_id,))
                c.execute("DELETE FROM alerts WHERE alert_id = ?", (alert_id,))
            c.execute("DELETE FROM audit WHERE at < ?", (before.isoformat(),))
            return len(ids)

        return await self._write(body)

    async def audit(self, at: datetime, actor: str, action: str, subject: str, detail: str = "") -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                (at.isoformat(), actor, action, subject, detail),
            )
        )

    # -- check-in timers ------------------------------------------------------------------------------
    async def put_checkin(self, row: CheckinRow, expected_version: int | None) -> int:
        def body(c: sqlite3.Connection) -> int:
            found = c.execute("SELECT version FROM checkins WHERE device_id = ?", (row.device_id,)).fetchone()
            stored = found[0] if found is not None else None
            if stored != expected_version:
                raise ConcurrentUpdate(row.timer_id)
            version = (stored or 0) + 1
            c.execute(
                f"INSERT OR REPLACE INTO checkins ({_CHECKIN_COLS}) VALUES (?, ?, ?, ?, ?, ?, 0)",
                (row.device_id, row.timer_id, row.doc, int(row.active), row.next_at, version),
            )
            return version

        return await self._write(body, urgent=True)

    async def get_checkin(self, device_id: str) -> CheckinRow | None:
        def q(c: sqlite3.Connection) -> CheckinRow | None:
            found = c.execute(f"SELECT {_CHECKIN_COLS} FROM checkins WHERE device_id = ?", (device_id,)).fetchone()
            return _checkin_row(found) if found is not None else None

        return await self._lookup(q)

    async def lease_checkins(self, now: float, lease_s: float, limit: int) -> list[CheckinRow]:
        def body(c: sqlite3.Connection) -> list[CheckinRow]:
            rows = c.execute(
                f"UPDATE checkins SET lease_until = ? WHERE device_id IN (SELECT device_id FROM checkins"
                f" WHERE active = 1 AND next_at <= ? AND lease_until <= ? ORDER BY next_at LIMIT ?)"
                f" RETURNING {_CHECKIN_COLS}",
                (now + lease_s, now, now, limit),
            ).fetchall()
            return sorted((_checkin_row(r) for r in rows), key=lambda r: r.next_at)

        return await self._write(body, urgent=True)

    async def next_checkin_at(self) -> float | None:
        def q(c: sqlite3.Connection) -> float | None:
            found = c.execute("SELECT MIN(MAX(next_at, lease_until)) FROM checkins WHERE active = 1").fetchone()
            return float(found[0]) if found is not None and found[0] is not None else None

        return await self._read(q)


def _settle_all(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        _settle(future, value, error)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return  # the caller was cancelled; its write still happened (or not) with the batch
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
