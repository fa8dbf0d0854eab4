"""Sink contract: deliver one queued contact; idempotent on its key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bridge.store.base import OutboxItem


@dataclass(frozen=True)
class Delivered:
    status: int = 200


@dataclass(frozen=True)
class Retry:
    reason: str
    after_s: float | None = None  # from Retry-After, when the platform says


@dataclass(frozen=True)
class Permanent:
    reason: str


Outcome = Delivered | Retry | Permanent


@runtime_checkable
class Sink(Protocol):
    name: str

    async def deliver(self, item: OutboxItem) -> Outcome: ...

    async def close(self) -> None: ...


async def deliver_guarded(sink: Sink | None, item: OutboxItem, missing: str) -> Outcome:
    """`sink.deliver(item)`, where no sink (`missing` says why) or a sink's bug is a Retry, never a lost
    contact: the forwarder and a delivery process send through this one guard."""
    if sink is None:
        return Retry(missing)
    try:
        return await sink.deliver(item)
    except Exception as exc:
        return Retry(f"sink error: {exc!r}"[:300])
