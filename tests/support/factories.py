"""Small builders shared by the store, Redis and pipeline tests."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

from bridge.core.ids import new_id
from bridge.core.model import Alert, AlertKind, AlertState, Severity, utcnow
from bridge.store.base import Change, OutboxItem, StoreError


def make_alert(device_id: str = "d1", state: AlertState = AlertState.received, **fields: Any) -> Alert:
    now = utcnow()
    values: dict[str, Any] = {
        "alert_id": new_id(),
        "tenant_id": "t1",
        "device_id": device_id,
        "kind": AlertKind.sos,
        "severity": Severity.severe,
        "silent": False,
        "status": "actual",
        "state": state,
        "occurred_at": now,
        "received_at": now,
        "updated_at": now,
        "transport": "http",
    }
    values.update(fields)
    return Alert(**values)


def make_item(
    alert: Alert,
    seq: int,
    critical: bool = True,
    route: str = "default",
    *,
    at: float | None = None,
    item_id: str | None = None,
) -> OutboxItem:
    return OutboxItem(
        item_id=item_id or new_id(),
        alert_id=alert.alert_id,
        seq=seq,
        msg_type="alert" if seq == 1 else "update",
        idempotency_key=f"{alert.alert_id}:{seq}",
        payload="{}",
        critical=critical,
        created_at=at if at is not None else time.time(),
        route=route,
    )


@contextlib.contextmanager
def store_outage(store: Any) -> Iterator[None]:
    """Every commit fails as a full disk or a lost database would: nothing is written (reads still work)."""
    original = store.commit

    async def failing(change: Change) -> None:
        raise StoreError("sqlite: disk I/O error")

    store.commit = failing
    try:
        yield
    finally:
        store.commit = original


async def until(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll `cond` (a plain or async callable) until it is true; AssertionError after `timeout` seconds.
    For state owned by the bridge, a virtual device or a server, where there is no event to wait on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = cond()
        if inspect.isawaitable(done):
            # The condition's own await is held to the same deadline (a stuck read fails, never hangs).
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                done = await done
        if done:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met in {timeout} s")
