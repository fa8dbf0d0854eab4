"""The one ingress every transport hands its frames to.

identify (Claim → registered device → profile that matches the frame) → decode with the profile's
decoder → unmatched frames made visible → debounce and edge-not-level → admission in the device's lane
(emergencies first, never dropped; non-emergencies coalesced) → `Pipeline.submit()` → a `Receipt`.

A transport keeps three jobs: receive frames, turn the Receipt into its wire answer, and notify its
devices of status changes. It acknowledges a frame only when `receipt.acknowledge` is true.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cachetools import LRUCache

from bridge.alerts.pipeline import Pipeline, Rejected, SubmitResult, device_state
from bridge.core.model import Device, Observation
from bridge.devices.decoding import DECODE_WARNINGS, Decoded, DecodeError, Frame, decode_frame, parse_json_object
from bridge.devices.fixage import judge, max_fix_age
from bridge.devices.profiles import DeviceProfile, ProfileRegistry
from bridge.infra.metrics import Metrics
from bridge.ingress.binding import BindingError, Claim, DeviceCache, choose_profile
from bridge.ingress.edges import EdgeMemory, edges
from bridge.ingress.lanes import Coalesced, Lanes
from bridge.ingress.receipt import Receipt
from bridge.ingress.repeats import RepeatCache, digest
from bridge.store.base import Store, StoreError

log = logging.getLogger("sosbridge.ingress")

DEFAULT_MAX_FRAME = 16 * 1024
# Frames of one backlog decoded per turn of the event loop: a 1,000-frame backlog never holds the loop for
# more than about 2 ms at a time, so another device's SOS read meanwhile is not kept waiting behind it.
BATCH_TURN = 32


@dataclass
class _Prepared:
    """A frame decoded and admitted up to its device's lane (`Ingress._prepare`)."""

    observations: list[Observation]
    device: Device
    fresh: bool  # read from the store just now: handed to the pipeline, saving its read
    profile: DeviceProfile
    frame_key: bytes | None  # None: the transport remembers this frame's repeats itself
    passed: list[Decoded]
    levels: list[tuple[str, bool]]


@dataclass(frozen=True)
class SentAhead:
    """A backlog `Ingress.send_ahead` started storing: the channel it went on (a later backlog of the sender
    is sent `behind` it) and its Receipts to come, one per frame in order, as `receive_batch` answers."""

    channel: object
    receipts: asyncio.Future[list[Receipt]]


class Ingress:
    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        profiles: ProfileRegistry,
        metrics: Metrics,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME,
        device_cache_s: float = 2.0,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.profiles = profiles
        self.metrics = metrics
        self.max_frame_bytes = max_frame_bytes
        self.levels = EdgeMemory()
        self.devices = DeviceCache(device_cache_s)
        self.lanes = Lanes(pipeline.submit, self._coalesced)
        self._last_press: LRUCache[tuple[str, str], float] = LRUCache(200_000)
        # Frames stored recently, byte for byte, with every event's message id: their repeats are duplicates.
        self._stored_frames: RepeatCache[SubmitResult] = RepeatCache()
        self.observations = ObservationEntry(self)

    # -- frames --------------------------------------------------------------------------------------
    async def receive(
        self,
        frame: Frame,
        claim: Claim,
        *,
        raw: str | None = None,
        overrides: dict[str, Any] | None = None,
        ref_scheme: str | None = None,
        repeats_answered: bool = False,
    ) -> Receipt:
        """One frame from a transport. `overrides` sets observation fields the frame's envelope carries
        (e.g. the target alert id of a CoAP request); `ref_scheme` names the registry identifier that an
        identity found inside the frame (a DevEUI) must agree with. `repeats_answered`: the transport answers
        byte-identical repeats of this frame itself once the Receipt says `repeatable` (the MQTT adapter), so
        the ingress neither looks it up nor remembers it (issue 27: a second copy of every stored frame's
        digest was about 2 MB per 10,000 alerts)."""
        found = await self._identify(claim, frame.payload, frame.retained, "retained messages never raise an alert")
        if isinstance(found, Receipt):
            return found
        prepared = self._prepare(frame, claim, found, raw, overrides, ref_scheme, repeats_answered)
        if isinstance(prepared, Receipt):
            return prepared
        # A device read just now is handed to the pipeline (saves a read); a cached one is not: its last
        # known position may be older than the fix stored a moment ago.
        return self._finish(prepared, await self._store(prepared.observations, prepared.device, prepared.profile,
                                                        prepared.fresh))

    async def receive_batch(self, frames: Sequence[tuple[Frame, Claim, str | None]], *,
                            ref_scheme: str | None = None, repeats_answered: bool = False) -> list[Receipt]:
        """Frames of one sender's backlog, in order, each answered as `receive` would answer it alone. Their
        observations join the device's lane together, so its presses fold into one commit and only its
        newest fix is stored, without a task or a coroutine chain per frame (issue 27: a flooding device's
        backlog is one job, at the cost of decoding each frame)."""
        receipts: list[Receipt | None] = [None] * len(frames)
        waiting: list[tuple[int, _Prepared, asyncio.Future[SubmitResult]]] = []
        for i, (frame, claim, raw) in enumerate(frames):
            if i and i % BATCH_TURN == 0:
                await asyncio.sleep(0)  # other senders' frames take their turn between slices of a backlog
            found = await self._identify(claim, frame.payload, frame.retained,
                                         "retained messages never raise an alert")
            prepared = found if isinstance(found, Receipt) else self._prepare(frame, claim, found, raw, None,
                                                                             ref_scheme, repeats_answered)
            if isinstance(prepared, Receipt):
                receipts[i] = prepared
            elif len(prepared.observations) == 1:
                device = prepared.device if prepared.fresh else None
                waiting.append((i, prepared, self.lanes.enqueue(prepared.observations[0], device)))
            else:
                # Several events in one frame: stored one after another, as `receive` does, after what waits.
                await self._settle(waiting, receipts)
                receipts[i] = self._finish(prepared, await self._store(
                    prepared.observations, prepared.device, prepared.profile, prepared.fresh))
        await self._settle(waiting, receipts)
        return [r for r in receipts if r is not None]

    async def _settle(self, waiting: list[tuple[int, _Prepared, asyncio.Future[SubmitResult]]],
                      receipts: list[Receipt | None]) -> None:
        """The Receipts of frames whose observations wait in their lanes, once each is stored (or not)."""
        for i, prepared, future in waiting:
            receipts[i] = self._finish(prepared, await self._results((future,), prepared.observations[0].transport,
                                                                     prepared.device, prepared.profile))
        waiting.clear()

    def _prepare(self, frame: Frame, claim: Claim, found: tuple[Device, bool], raw: str | None,
                 overrides: dict[str, Any] | None, ref_scheme: str | None,
                 repeats_answered: bool = False) -> Receipt | _Prepared:
        """Everything between identify and the lane, without awaiting: the profile, a stored repeat answered
        from memory, decode, identity check, debounce, edges; the observations, or the Receipt that ends here."""
        transport = claim.transport
        device, fresh = found
        try:
            profile = choose_profile(self.profiles, device, claim, frame.meta)
        except BindingError as exc:
            return self._refuse(transport, device, exc.code, exc.reason)
        frame_key = None if repeats_answered else _frame_digest(device.device_id, profile.id, frame)
        if frame_key is not None and (again := self._stored_frames.stored(frame_key)) is not None:
            # The very frame (same bytes, so the same message ids) was stored already: a redelivery or a
            # button's retry. Answered without decoding it again: a storm of repeats stays cheap.
            self.metrics.duplicate(transport)
            return Receipt("accepted", results=(again,), device=device, profile=profile, repeatable=True)
        try:
            # The decoder, then one rule for every decoder: a stale fix is last known, an implausible time dropped.
            events = decode_frame(frame, profile)
        except DecodeError as exc:
            # Each error class of the decoding contract carries its refusal code (bridge/devices/frames.py).
            return self._refuse(transport, device, exc.code, str(exc), profile=profile)
        if ref_scheme is not None and (bound := device.identifiers.get(ref_scheme, "").lower()):
            if any(e.device_ref and e.device_ref.lower() != bound for e in events):
                return self._refuse(transport, device, "identity_mismatch",
                                    f"the {ref_scheme} inside the frame is not the one bound to this device",
                                    profile=profile)
        known = [e for e in events if e.action != "unmatched"]
        dropped = sorted({str(w) for e in known for w in e.attributes.get(DECODE_WARNINGS) or ()})
        if dropped:
            # Decoded without a part that did not parse (docs/devices/partial-frames.md): still raised.
            self.metrics.frames_partial.labels(profile.id).inc()
            log.info("frame decoded without parts that did not parse",
                     extra={"device_id": device.device_id, "profile": profile.id, "decode_warnings": dropped})
        if not known:
            if events:
                return self._unmatched(transport, device, profile)
            return Receipt("ignored", "not_an_event", "understood; nothing for the police", device=device,
                           profile=profile)
        known = self._debounce(device, profile, known)
        if not known:
            return Receipt("ignored", "debounced", "a repeat within the debounce window", device=device,
                           profile=profile)
        passed, held, levels = edges(known, device.device_id, self.levels)
        if held:
            self.metrics.frames_held.labels(profile.id).inc(held)
        if not passed:
            return Receipt("ignored", "level_held", "this state was already reported", device=device,
                           profile=profile)
        # Claim the new levels now, so the same state arriving meanwhile is held; give them back if this
        # frame is not stored, so its redelivery passes again.
        for key, level in levels:
            self.levels.set(device.device_id, key, level)
        observations = [self._observation(e, device, claim, raw, overrides) for e in passed]
        return _Prepared(observations, device, fresh, profile, frame_key, passed, levels)

    def _finish(self, prepared: _Prepared, receipt: Receipt) -> Receipt:
        """After the lane: a stored frame is remembered for its repeats; an unstored one gives its levels back."""
        device, profile, passed = prepared.device, prepared.profile, prepared.passed
        if receipt.stored:
            self._pressed(device, profile, passed)
            if receipt.status == "accepted" and all(e.message_id for e in passed) and receipt.last is not None:
                # Only frames whose every event carries a message id: their repeat is by definition a
                # duplicate. A press with no id (a zigbee2mqtt action without last_seen) is a new press.
                if prepared.frame_key is not None:
                    self._stored_frames.remember(prepared.frame_key,
                                                 SubmitResult(receipt.last.alert_id, "duplicate", None))
                receipt = replace(receipt, repeatable=True)
        else:
            for key, level in prepared.levels:
                if self.levels.get(device.device_id, key) == level:
                    self.levels.set(device.device_id, key, not level)
        return receipt

    def send_ahead(self, frames: Sequence[tuple[Frame, Claim, str | None]], *, ref_scheme: str | None = None,
                   repeats_answered: bool = False, behind: object | None = None) -> SentAhead | None:
        """Start storing one sender's backlog and return at once (`SentAhead.receipts` answers it), so a
        transport can read and send that sender's next backlog while this one is stored. `behind`: the
        channel of that sender's earlier backlog still unanswered; this one is stored only if that one was
        entirely (else it comes back not_stored, to be retried after it, in order). None: not offered here
        (intake in this process works the sender's backlogs one at a time; `receive_batch`), or not now."""
        return None

    # -- the person's text for the platform (docs/platform/messages.md) ---------------------------------
    def registry_changed(self) -> None:
        """A device was registered, changed or removed (the API): the devices cached here are read again."""
        self.devices.forget()

    async def receive_text(self, claim: Claim, payload: bytes, *, retained: bool = False) -> Receipt:
        """A text reply from a device channel (MQTT `.../reply`): identified like every frame, then the
        `message` observation goes through the device's lane in order with its alerts and cancels. The
        payload is a JSON object: {"text": ..., "alert_id"?: ..., "message_id"?: ...} (no alert_id: the
        device's open alert)."""
        transport = claim.transport
        found = await self._identify(claim, payload, retained, "retained messages are never a new message")
        if isinstance(found, Receipt):
            return found
        device, fresh = found
        try:
            doc = parse_json_object(payload)
        except DecodeError as exc:
            return self._refuse(transport, device, "invalid", str(exc))
        text, alert_id, message_id = doc.get("text"), doc.get("alert_id"), doc.get("message_id")
        if not isinstance(text, str):
            return self._refuse(transport, device, "invalid", "a reply needs \"text\" (a string)")
        if alert_id is not None and not isinstance(alert_id, str):
            return self._refuse(transport, device, "invalid", "\"alert_id\" must be a string")
        if message_id is not None and (not isinstance(message_id, str) or not 1 <= len(message_id) <= 128):
            return self._refuse(transport, device, "invalid", "\"message_id\" must be 1 to 128 characters")
        obs = Observation(device_id=device.device_id, transport=transport, action="message", alert_id=alert_id,
                          text=text, message_id=message_id, raw=payload[:4096].decode("utf-8", "replace"),
                          auth=claim.auth)
        return await self._store([obs], device, None, fresh)

    # -- observations that need no decoding (voice intents, supervision, gateway last wills) ------------
    async def submit(self, obs: Observation, device: Device | None = None) -> Receipt:
        if obs.action == "location" and obs.location is not None and obs.location.fix_time is not None:
            # The fix-age rule for a fix a transport hands in without a decoder (an HTTP location update);
            # the bridge's own observations (supervision, last wills) carry no device time to judge.
            profile = self.profiles.get(device.profile_id) if device is not None else None
            [obs] = judge([obs], datetime.now(UTC), max_fix_age(profile))
        return await self._store([obs], device, None)

    # -- steps -----------------------------------------------------------------------------------------
    async def _identify(self, claim: Claim, payload: bytes, retained: bool,
                        retained_reason: str) -> Receipt | tuple[Device, bool]:
        """The checks every frame passes first: not a retained replay, within the size limit, from a
        registered device. The device and whether it was read just now, or the Receipt that ends here."""
        if retained:
            return Receipt("ignored", "retained", retained_reason)
        if len(payload) > self.max_frame_bytes:
            return self._refuse(claim.transport, None, "too_large",
                                f"payload of {len(payload)} bytes exceeds {self.max_frame_bytes}")
        try:
            device, fresh = await self.devices.resolve(self.store, claim)
        except StoreError as exc:
            return self._not_stored(claim.transport, None, exc)
        if device is None:
            return self._refuse(claim.transport, None, "unknown_device", f"{claim.describe()} is not registered")
        return device, fresh

    async def _store(self, observations: list[Observation], device: Device | None,
                     profile: DeviceProfile | None, hand_over: bool = False) -> Receipt:
        # One at a time through the device's lane; a generator, so nothing after a refusal is submitted.
        runs = (self.lanes.run(obs, device if hand_over else None) for obs in observations)
        return await self._results(runs, observations[0].transport, device, profile)

    async def _results(self, stored: Iterable[Awaitable[SubmitResult]], transport: str, device: Device | None,
                       profile: DeviceProfile | None) -> Receipt:
        """The Receipt of a frame's observations, awaited in order: refused at the first refusal, not stored
        at the first store error, coalesced when every one was replaced by a newer one."""
        results: list[SubmitResult] = []
        coalesced = False
        for submitted in stored:
            try:
                results.append(await submitted)
            except Coalesced:
                coalesced = True
            except Rejected as exc:  # counted and logged by the pipeline
                return Receipt("refused", exc.code, exc.reason, tuple(results), device, profile)
            except StoreError as exc:
                return self._not_stored(transport, device, exc)
        if coalesced and not results:
            return Receipt("coalesced", results=(), device=device, profile=profile)
        return Receipt("accepted", results=tuple(results), device=device, profile=profile)

    async def with_state(self, receipt: Receipt) -> Receipt:
        """The receipt with the alert's state filled in where the ingress answered a repeated frame from
        memory (its state may have moved on since). For transports whose answer shows the state (an HTTP
        or CoAP body, speech); a PUBACK or an ACK byte does not need the store read."""
        last = receipt.last
        if receipt.status != "accepted" or last is None or last.state is not None or not last.alert_id:
            return receipt
        alert = await self.store.get_alert(last.alert_id)
        if alert is None:
            return receipt
        filled = SubmitResult(last.alert_id, last.outcome, device_state(alert))
        return replace(receipt, results=tuple(filled if r is last else r for r in receipt.results))

    @staticmethod
    def _observation(event: Decoded, device: Device, claim: Claim, raw: str | None,
                     overrides: dict[str, Any] | None) -> Observation:
        obs = event.to_observation(device.device_id, claim.transport, raw=raw, auth=claim.auth)
        return obs.model_copy(update=overrides) if overrides else obs

    def _debounce(self, device: Device, profile: DeviceProfile, events: list[Decoded]) -> list[Decoded]:
        """Ghost presses (a radio repeating one press): the same kind again within the profile's window.
        Only presses already stored count, so a press that failed to store is never debounced."""
        if profile.debounce_s <= 0:
            return events
        now = time.monotonic()
        out = []
        for event in events:
            if event.action == "alert" and event.kind is not None and event.state_key is None:
                last = self._last_press.get((device.device_id, event.kind.value))
                if last is not None and now - last < profile.debounce_s:
                    continue
            out.append(event)
        return out

    def _pressed(self, device: Device, profile: DeviceProfile, events: list[Decoded]) -> None:
        if profile.debounce_s <= 0:
            return
        now = time.monotonic()
        for event in events:
            if event.action == "alert" and event.kind is not None:
                self._last_press[(device.device_id, event.kind.value)] = now

    def _refuse(self, transport: str, device: Device | None, code: str, reason: str,
                profile: DeviceProfile | None = None) -> Receipt:
        self.metrics.rejected(transport, code)
        log.info("frame refused", extra={"device_id": device.device_id if device else None, "reason": code,
                                         "transport": transport})
        return Receipt("refused", code, reason, device=device, profile=profile)

    def _unmatched(self, transport: str, device: Device, profile: DeviceProfile) -> Receipt:
        self.metrics.unmatched(profile.id)
        log.info("frame matches no mapping", extra={"device_id": device.device_id, "profile": profile.id,
                                                    "transport": transport})
        return Receipt("unmatched", "unmatched", f"the frame matches no mapping of profile {profile.id!r}",
                       device=device, profile=profile)

    def _not_stored(self, transport: str, device: Device | None, exc: Exception) -> Receipt:
        log.error("frame not stored; not acknowledged",
                  extra={"device_id": device.device_id if device else None, "transport": transport,
                         "error": str(exc)[:200]})
        return Receipt("not_stored", "not_stored", "not stored; retry", device=device)

    def _coalesced(self, obs: Observation) -> None:
        self.metrics.frames_coalesced.labels(obs.transport).inc()


def _frame_digest(device_id: str, profile_id: str, frame: Frame) -> bytes:
    """16 bytes standing for (device, profile, metadata, payload): what a repeat must match to the byte."""
    return digest(f"{device_id}\0{profile_id}\0{sorted(frame.meta.items())!r}", frame.payload)


class ObservationEntry:
    """Pipeline-shaped entry (`submit(obs) -> SubmitResult`, raising Rejected/StoreError) for callers
    that already hold an Observation: voice skills, supervision, gateway last wills. Same lanes, same
    admission as every frame."""

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress

    async def submit(self, obs: Observation) -> SubmitResult:
        try:
            return await self.ingress.lanes.run(obs)
        except Coalesced:
            return SubmitResult(None, "recorded", None)
