"""What the intake channel carries between `sosbridge serve` and its intake processes (framing:
bridge/infra/channel.py). Pure functions; docs/architecture.md#intake-on-more-than-one-core.

Parent → child: `(req_id, RECEIVE, (frame, claim, raw, overrides, ref_scheme, repeats_answered))` or
`(req_id, BATCH, ([(frame, claim, raw), ...], ref_scheme, repeats_answered, after_previous))`, or `(0, FORGET, ())`
when the registry changed (the devices cached there are read again; nothing is answered).
Child → parent: `(ANSWER, req_id, [receipt, ...])`, `(EVENT, status_event)`, `(COUNTS, [(metric, labels,
amount), ...])`. A commit's status events go before the answer that follows it, so the parent publishes a
device's `received` before it acknowledges the frame or wakes its forwarder.

Only str, bytes, numbers, bool, None, tuples, lists and dicts cross (marshal): a device crosses as its
JSON, a profile as its id, a state as its value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cachetools import LRUCache

from bridge.alerts.pipeline import SubmitResult
from bridge.core.events import StatusEvent, TextMessage
from bridge.core.model import AlertState, Device
from bridge.devices.frames import Frame
from bridge.devices.profiles import DeviceProfile
from bridge.ingress.binding import Claim
from bridge.ingress.receipt import Receipt

RECEIVE, BATCH, FORGET = 0, 1, 2  # requests (FORGET: the registry changed; no answer)
ANSWER, EVENT, COUNTS = 0, 1, 2  # from the child

BatchFrames = Sequence[tuple[Frame, Claim, str | None]]


# -- requests ------------------------------------------------------------------------------------------------
def frame_fields(frame: Frame) -> tuple[Any, ...]:
    return (frame.payload, frame.meta, frame.retained)


def frame_from(fields: tuple[Any, ...]) -> Frame:
    payload, meta, retained = fields
    return Frame.model_construct(payload=payload, meta=meta, retained=retained)  # built by the parent


def claim_fields(claim: Claim) -> tuple[Any, ...]:
    return (claim.transport, claim.identifiers, claim.device_id, claim.tenant, claim.fallback_profile,
            claim.companion, claim.label, claim.auth)


def claim_from(fields: tuple[Any, ...]) -> Claim:
    transport, identifiers, device_id, tenant, fallback, companion, label, auth = fields
    return Claim(transport, tuple(tuple(pair) for pair in identifiers), device_id, tenant, fallback, companion,
                 label, auth)


def dispatch_key(claim: Claim) -> str:
    """What places a sender on one intake process: its device when the transport names it, else the first
    identity it claims. The same sender always lands on the same process, so its frames keep their order
    and its lane, edges and repeats live in one place."""
    if claim.device_id:
        return f"{claim.tenant or ''}/{claim.device_id}"
    if claim.identifiers:
        scheme, value = claim.identifiers[0]
        return f"{scheme}:{value}"
    return claim.label


def receive_request(frame: Frame, claim: Claim, raw: str | None, overrides: dict[str, Any] | None,
                    ref_scheme: str | None, repeats_answered: bool) -> tuple[Any, ...]:
    return RECEIVE, (frame_fields(frame), claim_fields(claim), raw, overrides, ref_scheme, repeats_answered)


def batch_request(frames: BatchFrames, ref_scheme: str | None, repeats_answered: bool,
                  after_previous: bool = False) -> tuple[Any, ...]:
    """`after_previous`: sent while the sender's previous request was unanswered (`Ingress.send_ahead`): the
    child stores it only if that one was stored entirely."""
    return BATCH, ([(frame_fields(f), claim_fields(c), raw) for f, c, raw in frames], ref_scheme, repeats_answered,
                   after_previous)


def request_key(method: int, args: tuple[Any, ...]) -> str:
    """The sender a request is for (`dispatch_key` of its claim, the first frame's for a backlog). Pure."""
    claim = args[1] if method == RECEIVE else args[0][0][1]
    return dispatch_key(claim_from(claim))


# -- answers -------------------------------------------------------------------------------------------------
def receipt_fields(receipt: Receipt, dumped: dict[int, str] | None = None) -> tuple[Any, ...]:
    """`dumped`: the JSON of devices already written for this answer, by id (a backlog's receipts share
    their device: written once, not once per frame)."""
    results = [(r.alert_id, r.outcome, r.state.value if r.state is not None else None) for r in receipt.results]
    device = None
    if receipt.device is not None:
        memo = dumped if dumped is not None else {}
        device = memo.get(id(receipt.device))
        if device is None:
            device = memo[id(receipt.device)] = receipt.device.model_dump_json()
    profile = receipt.profile.id if receipt.profile is not None else None
    return (receipt.status, receipt.code, receipt.reason, results, device, profile, receipt.details,
            receipt.repeatable)


class Reader:
    """Rebuilds what the child sent, in the parent: devices from their JSON (the last few kept by their
    JSON: a backlog's receipts and a commit's event share their device, read once), profiles from the
    parent's own registry (loaded from the same files)."""

    def __init__(self, profile: Callable[[str | None], DeviceProfile | None]) -> None:
        self._profile = profile
        self._devices: LRUCache[str, Device] = LRUCache(64)

    def device(self, doc: str | None) -> Device | None:
        if doc is None:
            return None
        device = self._devices.get(doc)
        if device is None:
            device = self._devices[doc] = Device.model_validate_json(doc)
        return device

    def receipt(self, fields: Sequence[Any]) -> Receipt:
        status, code, reason, results, device, profile, details, repeatable = fields
        return Receipt(
            status, code, reason,
            tuple(SubmitResult(alert_id, outcome, AlertState(state) if state is not None else None)
                  for alert_id, outcome, state in results),
            self.device(device), self._profile(profile), details, repeatable,
        )

    def event(self, fields: Sequence[Any]) -> StatusEvent:
        alert_id, device_id, tenant_id, state, event, text, kind, covert, transport, device, version = fields
        return StatusEvent(alert_id, device_id, tenant_id, AlertState(state), event,
                           TextMessage(*text) if text is not None else None, kind, covert, transport,
                           self.device(device), version)


def event_fields(event: StatusEvent) -> tuple[Any, ...]:
    text = event.text
    text_fields = (None if text is None else
                   (text.message_id, text.text, text.language, text.discreet, text.audible, text.at))
    device = event.device.model_dump_json() if event.device is not None else None
    return (EVENT, (event.alert_id, event.device_id, event.tenant_id, event.state.value, event.event, text_fields,
                    event.kind, event.covert, event.transport, device, event.version))
