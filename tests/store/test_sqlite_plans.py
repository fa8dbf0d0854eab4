"""The SQLite store's query plans for the writes a flood repeats (issue 27): each reads only what it
changes, through an index, whatever the alert's history."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.store.sqlite import SqliteStore


async def test_replacing_an_alert_s_waiting_contacts_reads_only_those(sqlite_store: SqliteStore) -> None:
    """A cancel or a superseding update touches the alert's contacts still waiting, through an index of
    those alone: a flooding device's thousands of superseded updates are never scanned again (issue 27:
    that scan kept the one writer busy while other devices' alerts waited)."""
    from bridge.store.sqlite import _SQL_CANCEL_PENDING, _SQL_SUPERSEDE_UPDATES

    def plans(c: Any) -> list[str]:
        return [str([tuple(row) for row in c.execute("EXPLAIN QUERY PLAN " + sql, ("a1",)).fetchall()])
                for sql in (_SQL_SUPERSEDE_UPDATES, _SQL_CANCEL_PENDING)]

    for plan in await asyncio.wait_for(sqlite_store._run(plans), 10):
        assert "outbox_alert_waiting" in plan, plan
