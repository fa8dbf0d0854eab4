"""The adapter contract: transports plug in here and hand their frames to `ctx.ingress.receive()`.

A transport has three jobs: receive frames (and state what it knows of the sender as a `Claim`), turn
the ingress's `Receipt` into its wire answer, and notify its devices of status changes (`ctx.bus`).
Identity, profile choice, decoding, admission and storage are the ingress's (bridge/ingress/). A
transport acknowledges a frame only when `receipt.acknowledge` is true (never for `not_stored`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fastapi import APIRouter

    from bridge.alerts.emergency_contacts import SmsGateway
    from bridge.core.events import StatusBus
    from bridge.devices.profiles import ProfileRegistry
    from bridge.infra.metrics import Metrics
    from bridge.ingress import Ingress
    from bridge.store.base import Store


class AdapterContext(Protocol):
    # The bridge's `Settings` (bridge/app/config.py), untyped here so the ingress never imports the app wing.
    settings: Any
    store: Store
    # No pipeline here: every frame goes through `ingress.receive()` (or `ingress.observations`), so no
    # transport can bypass identity, decoding, admission and the Receipt.
    ingress: Ingress
    metrics: Metrics
    bus: StatusBus
    profiles: ProfileRegistry
    # Where a transport that can text (a GSM modem) offers itself for emergency-contact SMS.
    sms_gateway: SmsGateway


@runtime_checkable
class Adapter(Protocol):
    name: str
    # The transport names this adapter carries and the acknowledgement styles it gives for each
    # (bridge/devices/transports.py); a profile names one of them. Empty: just `name`, ack `none`.
    transports: ClassVar[Mapping[str, frozenset[str]]]

    def enabled(self, settings: Any) -> bool: ...

    def routers(self, ctx: AdapterContext) -> list[APIRouter]: ...

    async def start(self, ctx: AdapterContext) -> None: ...

    async def stop(self) -> None: ...


class BaseAdapter:
    """Convenience base: no routes, nothing to start."""

    name = "base"
    transports: ClassVar[Mapping[str, frozenset[str]]] = {}

    def enabled(self, settings: Any) -> bool:
        return True

    def routers(self, ctx: AdapterContext) -> list[APIRouter]:
        return []

    async def start(self, ctx: AdapterContext) -> None:
        return None

    async def stop(self) -> None:
        return None
