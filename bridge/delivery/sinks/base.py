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
