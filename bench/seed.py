"""Register bench devices straight into the store before the bridge starts (the issue asks for this)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from bridge.app.config import Settings
from bridge.core.model import Device, Person
from bridge.store import make_store

TENANT = "bench"
MQTT_PROFILE = "sosbridge-mqtt-button"
BATCH = 500  # writes handed to the store at once: its group commit turns them into a few transactions
# redis-py 8's connection pool refuses (MaxConnectionsError) beyond 100 commands in flight; a Redis write
# is one round trip, so 50 at once keeps the pipe full without touching that limit.
REDIS_BATCH = 50


def device(device_id: str) -> Device:
    return Device(
        device_id=device_id,
        tenant_id=TENANT,
        profile_id=MQTT_PROFILE,
        label="bench button",
        person=Person(name=f"Bench {device_id}", language="en-GB"),
    )


def token_for(device_id: str) -> str:
    return f"bench-token-{device_id}-0123456789abcdef"


async def seed(settings: Settings, mqtt_ids: Iterable[str], http_ids: Iterable[str] = ()) -> int:
    """Write devices (and bearer tokens for HTTP ones), BATCH at a time through the store's own writes (so
    the store's group commit batches them). Durability is irrelevant for fixtures, so the SQLite seeding
    connection runs with synchronous=OFF (the bridge reopens with FULL). 20,000 devices take about a second.
    Once `sosbridge devices import` exists (the newcomer issue), the bench may seed through it instead."""
    store = make_store(settings)
    await store.open()
    n = 0
    try:
        run = getattr(store, "_run", None)
        if run is not None and not settings.redis_url:
            with contextlib.suppress(Exception):
                await run(lambda c: c.execute("PRAGMA synchronous=OFF"))
        batch = REDIS_BATCH if settings.redis_url else BATCH
        mqtt_list = list(mqtt_ids)
        for i in range(0, len(mqtt_list), batch):
            await asyncio.gather(*(store.put_device(device(d)) for d in mqtt_list[i:i + batch]))
        n += len(mqtt_list)

        async def http_device(device_id: str) -> None:
            await store.put_device(device(device_id).model_copy(update={"profile_id": None}))
            await store.set_credential(device_id, "token", token_for(device_id))

        http_list = list(http_ids)
        for i in range(0, len(http_list), batch):
            await asyncio.gather(*(http_device(d) for d in http_list[i:i + batch]))
        n += len(http_list)
    finally:
        await store.close()
    return n


def seed_sync(settings: Settings, mqtt_ids: Iterable[str], http_ids: Iterable[str] = ()) -> int:
    return asyncio.run(seed(settings, list(mqtt_ids), list(http_ids)))
