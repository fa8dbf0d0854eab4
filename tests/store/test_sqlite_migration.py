"""An existing SQLite database from before outbox bodies were stored opens, keeps its rows, and gains the
columns: old rows lease with no body (rendered at delivery), new rows keep theirs."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from bridge.store.base import Change
from bridge.store.sqlite import SqliteStore
from tests.support.factories import make_alert, make_item

# The outbox table as databases created before the body columns have it (the schema's CREATE TABLE).
OLD_OUTBOX = """
CREATE TABLE outbox (
  item_id TEXT PRIMARY KEY,
  alert_id TEXT NOT NULL, seq INTEGER NOT NULL, msg_type TEXT NOT NULL,
  idempotency_key TEXT NOT NULL, payload TEXT NOT NULL, critical INTEGER NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at REAL NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0,
  last_error TEXT, fallback_sent INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
  route TEXT NOT NULL DEFAULT 'default'
);
"""


def columns(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(outbox)")]


async def test_an_old_database_gains_the_body_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_OUTBOX)
        conn.execute(
            "INSERT INTO outbox (item_id, alert_id, seq, msg_type, idempotency_key, payload, critical, state, "
            "created_at) VALUES ('old-1', 'a-old', 1, 'alert', 'a-old:1', '{}', 1, 'pending', ?)", (time.time(),))
    assert "body" not in columns(db)

    store = SqliteStore(db)
    await store.open()
    try:
        [old] = await store.lease(10, 30, time.time())
        assert (old.item_id, old.body, old.body_format) == ("old-1", None, None)
        alert = make_alert()
        new = make_item(alert, 1)
        new.body, new.body_format = "<alert/>", "cap"
        await store.commit(Change(alert=alert, outbox=[new]))
        [stored] = await store.outbox_items(alert.alert_id)
        assert (stored.body, stored.body_format) == ("<alert/>", "cap")
    finally:
        await store.close()
    assert columns(db)[-2:] == ["body", "body_format"]

    # Opening again is a no-op for the migration: the columns are there once.
    store = SqliteStore(db)
    await store.open()
    await store.close()
    assert columns(db).count("body") == 1
