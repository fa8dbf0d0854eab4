"""The adapter contract: transports plug in here and hand observations to `ctx.pipeline.submit()`.

An adapter authenticates, enforces size limits, decodes with the device's profile or decoder, calls
`submit()`, and acknowledges the device only after `submit()` returns. On `Rejected` it answers the
sender with the reason (and the pipeline has already counted it); on `StoreError` it must NOT acknowledge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fastapi import APIRouter

    from bridge.config import Settings
    from bridge.events import StatusBus
    from bridge.metrics import Metrics
    from bridge.pipeline import Pipeline
    from bridge.profiles import ProfileRegistry
    from bridge.store.base import Store


class AdapterContext(Protocol):
    settings: Settings
    store: Store
    pipeline: Pipeline
    metrics: Metrics
    bus: StatusBus
    profiles: ProfileRegistry


@runtime_checkable
class Adapter(Protocol):
    name: str

    def enabled(self, settings: Settings) -> bool: ...

    def routers(self, ctx: AdapterContext) -> list[APIRouter]: ...

    async def start(self, ctx: AdapterContext) -> None: ...

    async def stop(self) -> None: ...


class BaseAdapter:
    """Convenience base: no routes, nothing to start."""

    name = "base"

    def enabled(self, settings: Settings) -> bool:
        return True

    def routers(self, ctx: AdapterContext) -> list[APIRouter]:
        return []

    async def start(self, ctx: AdapterContext) -> None:
        return None

    async def stop(self) -> None:
        return None
