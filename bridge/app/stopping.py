"""Graceful stop of `sosbridge serve` within a bound, whatever clients are connected.

On the first SIGTERM or SIGINT (docs/operations/stopping.md):
1. HTTP intake stops (uvicorn closes its listening sockets) and the status bus is closed, so every
   event stream ends at once with a `retry:` hint instead of holding the stop;
2. requests in flight finish (an alert being committed is committed and answered) for at most half of
   SOSBRIDGE_STOP_TIMEOUT_S, then whatever is still running is cancelled;
3. the runtime stops: the other transports (MQTT, watch, CoAP, DC-09, serial) close their connections,
   the forwarder returns its leases, the store closes.
A watchdog ends the process with exit code 70 if all that has not finished by SOSBRIDGE_STOP_TIMEOUT_S:
as safe as a power cut (every acknowledged alert is already committed), and never a stop that hangs.
A second SIGINT skips the waiting (uvicorn's force exit).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("sosbridge.stop")

WATCHDOG_EXIT_CODE = 70  # EX_SOFTWARE: the stop overran its bound


def drain_timeout(stop_timeout_s: float) -> float:
    """How long requests in flight may take to finish: half of the bound (the rest is the runtime's)."""
    return max(0.5, stop_timeout_s / 2)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, which on the first stop signal also closes the status bus (event streams end with
    a retry hint) and arms a watchdog that bounds the whole stop."""

    def __init__(self, config: uvicorn.Config, bus: Any, stop_timeout_s: float) -> None:
        super().__init__(config)
        self.bus = bus
        self.stop_timeout_s = stop_timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_started: float | None = None

    async def serve(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.stop_started is None:
            self.begin_stop(f"signal {sig}")

    def begin_stop(self, why: str) -> None:
        """Start stopping (idempotent); safe to call from a signal handler."""
        if self.stop_started is not None:
            return
        self.stop_started = time.monotonic()
        self.should_exit = True
        watchdog = threading.Timer(self.stop_timeout_s, self._overran)
        watchdog.daemon = True
        watchdog.start()
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._close_streams, why)

    def _close_streams(self, why: str) -> None:
        log.info("stopping", extra={"why": why, "bound_s": self.stop_timeout_s})
        self.bus.close()

    def _overran(self) -> None:
        log.error("stop overran its bound: exiting now", extra={"bound_s": self.stop_timeout_s})
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(WATCHDOG_EXIT_CODE)
