"""What the ingress answers a transport: one Receipt per frame, which the transport turns into its wire
answer (PUBACK, 2.01/4.xx/5.03, ACK/NAK byte, HTTP status, speech)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from bridge.alerts.pipeline import SubmitResult
    from bridge.core.model import Device
    from bridge.devices.profiles import DeviceProfile

ReceiptStatus = Literal[
    "accepted",  # stored (created, escalated, duplicate, updated, cancelled, recorded)
    "coalesced",  # a non-emergency frame deliberately replaced by a newer one from the same device
    "ignored",  # understood and deliberately not an event (retained replay, a held level, chatter)
    "unmatched",  # from a registered device, but no mapping of its profile covers it (counted, reported)
    "refused",  # permanently refused: tell the sender `reason`; do not retry
    "not_stored",  # nothing stored (store outage): never acknowledge, the sender or the transport retries
]


@dataclass(frozen=True)
class Receipt:
    status: ReceiptStatus
    code: str = ""
    reason: str = ""
    results: tuple[SubmitResult, ...] = ()
    device: Device | None = None
    profile: DeviceProfile | None = None
    details: dict[str, str] = field(default_factory=dict)
    # Stored, and every event carried a message id: a byte-identical repeat is a duplicate and may be
    # answered without the ingress (bridge/ingress/repeats.py).
    repeatable: bool = False

    @property
    def acknowledge(self) -> bool:
        """May the transport acknowledge the frame at its own level (PUBACK, delete the SMS ...)?"""
        return self.status != "not_stored"

    @property
    def stored(self) -> bool:
        return self.status in ("accepted", "coalesced")

    @property
    def last(self) -> SubmitResult | None:
        """The result that best describes the alert now: the last one that names an alert."""
        with_alert = [r for r in self.results if r.alert_id is not None]
        return with_alert[-1] if with_alert else (self.results[-1] if self.results else None)

    @classmethod
    def refused(cls, code: str, reason: str, **kw: object) -> Receipt:
        return cls("refused", code, reason, **kw)  # type: ignore[arg-type]
