"""Store selection: SQLite by default, Redis when `SOSBRIDGE_REDIS_URL` is set."""

from __future__ import annotations

from typing import Protocol

from bridge.store.base import Change, DuplicateMessage, OutboxItem, OutboxStats, Store, StoreError

__all__ = ["Change", "DuplicateMessage", "OutboxItem", "OutboxStats", "Store", "StoreError", "make_store"]


class StoreSettings(Protocol):
    """The two settings that choose the store (fields of bridge/app/config.py's `Settings`)."""

    @property
    def redis_url(self) -> str | None: ...
    @property
    def db(self) -> str: ...


def make_store(settings: StoreSettings) -> Store:
    if settings.redis_url:
        from bridge.store.redis import RedisStore  # optional extra

        return RedisStore(settings.redis_url)
    from bridge.store.sqlite import SqliteStore

    return SqliteStore(settings.db)
