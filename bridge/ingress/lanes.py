"""Admission and fairness: one lane per device, emergencies first, non-emergencies coalesced.

Each device has at most one observation being stored at a time, so a flooding device occupies one slot
of the store while every other device's first alert goes straight in. In its lane, alert, cancel,
restore and text message observations queue in order and are never dropped; identical waiting presses
are folded into one submit (every press still counted and its message id still deduped). Locations and
heartbeats keep only the newest: an older one still waiting is answered `coalesced` (acknowledged,
deliberately not stored).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bridge.alerts.pipeline import SubmitResult
from bridge.core.model import Device, Observation
from bridge.store.base import StoreError

MAX_FOLD = 500  # presses folded into one submit (bounds one commit's dedupe keys)
ORDERED_ACTIONS = frozenset({"alert", "cancel", "restore", "message"})

Submit = Callable[[Observation, Device | None], Awaitable[SubmitResult]]


class Coalesced(Exception):
    """The observation was replaced by a newer one of the same device before it was stored."""


@dataclass
class _Job:
    obs: Observation
    future: asyncio.Future[SubmitResult]
    device: Device | None = None


@dataclass
class _Lane:
    ordered: deque[_Job] = field(default_factory=deque)
    latest: _Job | None = None
    task: asyncio.Task[None] | None = None
    busy: bool = False  # served in a caller's task right now


def foldable(a: Observation, b: Observation) -> bool:
    """Two waiting presses that may be stored as one (same alert, same kind, same flags). Pure."""
    return (
        a.action == b.action == "alert"
        and a.kind == b.kind
        and a.silent == b.silent
        and a.transport == b.transport
        and a.alert_id == b.alert_id
        and a.severity == b.severity
        and a.status == b.status
        and a.verified == b.verified
    )


def fold(observations: list[Observation]) -> Observation:
    """One observation standing for several presses; the newest location and time win. Pure."""
    first, last = observations[0], observations[-1]
    ids = [o.message_id for o in observations[1:] if o.message_id]
    location = next((o.location for o in reversed(observations) if o.location is not None), None)
    return first.model_copy(
        update={
            "also_message_ids": [*first.also_message_ids, *ids],
            "presses": sum(o.presses for o in observations),
            "location": location,
            "occurred_at": first.occurred_at or last.occurred_at,
        }
    )


class Lanes:
    def __init__(self, submit: Submit, on_coalesced: Callable[[Observation], None] | None = None) -> None:
        self._submit = submit
        self._on_coalesced = on_coalesced
        self._lanes: dict[str, _Lane] = {}

    @property
    def active(self) -> int:
        return len(self._lanes)

    async def run(self, obs: Observation, device: Device | None = None) -> SubmitResult:
        """Store `obs` in its device's turn. Raises Coalesced, or whatever the pipeline raised."""
        if obs.device_id not in self._lanes:
            # The common case, a device with nothing waiting: serve it in the caller's task (no extra task).
            future: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
            lane = self._lanes[obs.device_id] = _Lane(busy=True)
            try:
                await self._serve([_Job(obs, future, device)])
            finally:
                lane.busy = False
                self._after(obs.device_id, lane)
            return future.result()
        return await self.enqueue(obs, device)

    def enqueue(self, obs: Observation, device: Device | None = None) -> asyncio.Future[SubmitResult]:
        """Queue `obs` in its device's lane and return at once: the future resolves (or raises as `run`
        does) once it is stored. Observations queued together fold together: a backlog is one job."""
        future: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
        job = _Job(obs, future, device)
        lane = self._lanes.get(obs.device_id)
        if lane is None:
            lane = self._lanes[obs.device_id] = _Lane()
        if obs.action in ORDERED_ACTIONS:
            lane.ordered.append(job)
        else:
            replaced = lane.latest
            if replaced is not None and replaced.obs.alert_id == obs.alert_id:
                replaced.future.set_exception(Coalesced())
                if self._on_coalesced is not None:
                    self._on_coalesced(replaced.obs)
            elif replaced is not None:
                lane.ordered.append(replaced)  # a fix for another alert keeps its place
            lane.latest = job
        if lane.task is None and not lane.busy:
            lane.task = asyncio.create_task(self._drain(obs.device_id, lane), name=f"lane:{obs.device_id}")
        return future

    def _next(self, lane: _Lane) -> list[_Job]:
        if lane.ordered:
            group = [lane.ordered.popleft()]
            while lane.ordered and len(group) < MAX_FOLD and foldable(group[0].obs, lane.ordered[0].obs):
                group.append(lane.ordered.popleft())
            return group
        if lane.latest is not None:
            job, lane.latest = lane.latest, None
            return [job]
        return []

    async def _serve(self, group: list[_Job]) -> None:
        live = [j for j in group if not j.future.done()]  # a caller gone (cancelled) is skipped
        if not live:
            return
        obs = fold([j.obs for j in live]) if len(live) > 1 else live[0].obs
        try:
            result = await self._submit(obs, live[-1].device)
        except asyncio.CancelledError:
            # The lane's task is cancelled (shutting down) mid-store: the callers of this group still
            # wait on their futures and must hear that nothing was acknowledged, not wait forever.
            for job in live:
                if not job.future.done():
                    job.future.set_exception(StoreError("the bridge is stopping"))
            raise
        except Exception as exc:
            for job in live:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job in live:
            if not job.future.done():
                job.future.set_result(result)

    def _after(self, device_id: str, lane: _Lane) -> None:
        """A lane with more waiting gets a task to drain it; an empty one is forgotten."""
        lane.task = None
        if lane.ordered or lane.latest is not None:
            lane.task = asyncio.create_task(self._drain(device_id, lane), name=f"lane:{device_id}")
        else:
            self._lanes.pop(device_id, None)

    async def _drain(self, device_id: str, lane: _Lane) -> None:
        try:
            while group := self._next(lane):
                await self._serve(group)
        except asyncio.CancelledError:
            # Shutting down: nothing waiting was stored, so nothing may be acknowledged.
            for job in [*lane.ordered, *([lane.latest] if lane.latest else [])]:
                if not job.future.done():
                    job.future.set_exception(StoreError("the bridge is stopping"))
            self._lanes.pop(device_id, None)
            raise
        self._after(device_id, lane)
