"""Store selection: SQLite by default, Redis when `SOSBRIDGE_REDIS_URL` is set."""

from __future__ import annotations

from bridge.app.config import Settings
from bridge.store.base import Change, DuplicateMessage, OutboxItem, OutboxStats, Store, StoreError

__all__ = ["Change", "DuplicateMessage", "OutboxItem", "OutboxStats", "Store", "StoreError", "make_store"]


def make_store(settings: Settings) -> Store:
    if settings.redis_url:
        from bridge.store.redis import RedisStore  # optional extra

        return RedisStore(settings.redis_url)
    from bridge.store.sqlite import SqliteStore

    return SqliteStore(settings.db)
