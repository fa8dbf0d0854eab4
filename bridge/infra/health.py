"""Transport health for `/readyz`: a dead reader task or an unreachable broker makes the bridge not ready.

An adapter reports its own health by implementing `health() -> list[tuple[str, str]]` (reason code,
detail), e.g. `[("unreachable", "mqtt broker 127.0.0.1:1883: connection refused")]`; an empty list means
healthy. Adapters that do not implement it are probed generically, so a transport is never invisible:

- every `asyncio.Task` the adapter holds in an attribute (alone, or in a list, tuple or dict) must still
  be running: a finished one is a reader or status loop that ended (`task_dead`). Sets are skipped: they
  hold short-lived per-message tasks.
- every object it holds with a `connected` `asyncio.Event` (an MQTT connection) must be connected; one
  that has not been connected for `grace_s` is `unreachable`.

The monitor logs each problem once when it appears and once when it clears, so an outage is never silent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("sosbridge.health")


@dataclass(frozen=True)
class TransportProblem:
    adapter: str
    reason: str
    detail: str


def _tasks(value: Any) -> Iterable[asyncio.Task[Any]]:
    if isinstance(value, asyncio.Task):
        yield value
    elif isinstance(value, list | tuple):
        yield from (v for v in value if isinstance(v, asyncio.Task))
    elif isinstance(value, dict):
        yield from (v for v in value.values() if isinstance(v, asyncio.Task))


def _task_detail(task: asyncio.Task[Any]) -> str:
    name = task.get_name()
    if task.cancelled():
        return f"task {name} was cancelled"
    exc = task.exception()
    return f"task {name} ended: {exc!r}" if exc is not None else f"task {name} returned"


class TransportMonitor:
    def __init__(self, grace_s: float = 3.0) -> None:
        self.grace_s = grace_s
        self._disconnected_since: dict[tuple[str, int], float] = {}
        self._reported: set[tuple[str, str]] = set()

    def probe(self, adapter: Any, now: float) -> list[TransportProblem]:
        name = str(getattr(adapter, "name", type(adapter).__name__))
        own = getattr(adapter, "health", None)
        if callable(own):
            try:
                return [TransportProblem(name, reason, detail) for reason, detail in own()]
            except Exception as exc:
                return [TransportProblem(name, "health_check_failed", repr(exc))]
        problems: list[TransportProblem] = []
        for attr, value in list(vars(adapter).items()):
            for task in _tasks(value):
                if task.done():
                    problems.append(TransportProblem(name, "task_dead", f"{attr}: {_task_detail(task)}"))
            connected = getattr(value, "connected", None)
            if isinstance(connected, asyncio.Event):
                key = (name, id(value))
                if connected.is_set():
                    self._disconnected_since.pop(key, None)
                else:
                    since = self._disconnected_since.setdefault(key, now)
                    if now - since >= self.grace_s:
                        where = getattr(getattr(value, "url", None), "redacted", None)
                        target = where() if callable(where) else attr
                        problems.append(
                            TransportProblem(name, "unreachable", f"{target}: not connected for {now - since:.0f} s")
                        )
        return problems

    def check(self, adapters: Iterable[Any], started: Iterable[str]) -> list[TransportProblem]:
        """Problems of the started adapters; logs each one when it appears and when it clears."""
        now = time.monotonic()
        running = set(started)
        problems = [p for a in adapters if getattr(a, "name", None) in running for p in self.probe(a, now)]
        keys = {(p.adapter, p.reason) for p in problems}
        for p in problems:
            if (p.adapter, p.reason) not in self._reported:
                log.error("transport not ready", extra={"adapter": p.adapter, "reason": p.reason, "detail": p.detail})
        for adapter, reason in self._reported - keys:
            log.warning("transport recovered", extra={"adapter": adapter, "reason": reason})
        self._reported = keys
        return problems
