"""Delivery processes: `sosbridge serve --workers N` starts N-1 of them (N=2: one) and keeps them running.

Main process: the forwarder leases, orders, retries, fails over, records and alarms as with one process;
the platform routes' sinks (webhook, SIP; bridge/app/delivery_sinks.py) are `RemoteSink`s that hand each
contact to a delivery process over a socketpair (bridge/delivery/remote.py) and await its outcome. The
store keeps one writer. A process that exits is started again (alarm `delivery_process_exited`, counted
in `sosbridge_alarms_total`); its unanswered contacts are retried with their own Idempotency-Key.

Delivery process (`python -m bridge.app.delivery_process FD PARENT_PID`): no store, no state; it gets
the settings and routes in the channel's first frame, sends, and ends when the channel closes. It dies
with its parent (PR_SET_PDEATHSIG, and EOF on the channel) and ignores SIGINT/SIGTERM: stopping is the
parent's call, so a Ctrl-C to the process group never cuts a POST the parent still waits for.
See docs/architecture.md ("Processes").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable

from bridge.app.config import Settings
from bridge.app.delivery_sinks import build_sinks, portable_routes
from bridge.delivery.channel import frame
from bridge.delivery.remote import Link, RemoteDelivery
from bridge.delivery.routing import RoutingTable
from bridge.delivery.sinks.base import Sink
from bridge.infra.aio import stop_tasks, wait_event

log = logging.getLogger("sosbridge.delivery")

ALARM = "delivery_process_exited"
READY_TIMEOUT_S = 30.0  # a delivery process imports aiohttp and the formats: about half a second
EXIT_TIMEOUT_S = 5.0
PR_SET_PDEATHSIG = 1
RESTART_MAX_S = 30.0


def default_workers() -> int:
    """2 when the process may run on at least two CPUs, else 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 else 1


class DeliveryProcesses:
    """Starts `count` delivery processes, restarts one that exits, stops them after the forwarder."""

    def __init__(
        self, settings: Settings, routes: RoutingTable, count: int, remote: RemoteDelivery,
        raise_alarm: Callable[[str, str], None], clear_alarm: Callable[[str], None],
    ) -> None:
        self.hello = frame(pickle.dumps((settings, routes)))
        self.count = count
        self.remote = remote
        self.raise_alarm = raise_alarm
        self.clear_alarm = clear_alarm
        self.pids: list[int | None] = [None] * count
        self._links: dict[int, Link] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._supervise(i), name=f"delivery-process-{i}")
                       for i in range(self.count)]
        if not await wait_event(self.remote.any_ready, READY_TIMEOUT_S):
            self.raise_alarm(ALARM, f"no delivery process ready within {READY_TIMEOUT_S:g} s")

    async def _supervise(self, index: int) -> None:
        delay = 0.1
        while not self._stopping:
            started = time.monotonic()
            code: int | str | None
            try:
                code = await self._run_one(index)
            except (OSError, RuntimeError) as exc:  # a socket or a process that could not be set up
                log.error("delivery process failed", extra={"index": index, "error": repr(exc)})
                code = repr(exc)
            if self._stopping:
                return
            self.raise_alarm(ALARM, f"delivery process {index} exited ({code}); started again")
            delay = 0.1 if time.monotonic() - started > 10 else min(RESTART_MAX_S, delay * 2)
            await asyncio.sleep(delay)

    async def _run_one(self, index: int) -> int | None:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge.app.delivery_process", str(theirs.fileno()), str(os.getpid()),
                pass_fds=[theirs.fileno()], stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            log.error("delivery process not started", extra={"error": repr(exc)})
            return None
        finally:
            theirs.close()
        self.pids[index] = proc.pid
        loop = asyncio.get_running_loop()
        _, link = await loop.create_connection(self.remote.link, sock=ours)
        self._links[index] = link
        if self._stopping:  # stop() came while it was starting: it ends at once with its channel
            link.close()
        link.send_raw(self.hello)
        log.info("delivery process started", extra={"index": index, "pid": proc.pid})
        exited = asyncio.ensure_future(proc.wait())
        ready = asyncio.ensure_future(wait_event(link.ready_event, READY_TIMEOUT_S))
        try:
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            if link.ready:
                if not self._stopping:
                    self.clear_alarm(ALARM)
                await asyncio.wait({link.lost, exited}, return_when=asyncio.FIRST_COMPLETED)
            elif not exited.done() and not self._stopping:  # stuck before ready: ended, started again
                log.error("delivery process not ready in time", extra={"pid": proc.pid})
            link.close()  # the channel is gone or the process is: end both
            await asyncio.wait({exited}, timeout=EXIT_TIMEOUT_S)  # EOF: it cancels its requests and exits
            if not exited.done():
                log.warning("delivery process did not exit with its channel; killed", extra={"pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.wait_for(exited, EXIT_TIMEOUT_S)
            return proc.returncode
        finally:
            ready.cancel()
            exited.cancel()
            link.close()
            self.pids[index] = None
            self._links.pop(index, None)

    async def stop(self) -> None:
        """Close every channel: each process cancels what it still sends and exits; wait for them."""
        self._stopping = True
        for link in list(self._links.values()):
            link.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2 * EXIT_TIMEOUT_S + 1)
        await stop_tasks(self._tasks)


# -- the delivery process ---------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above: nobody would stop us
        os._exit(0)


def _setup(body: bytes) -> dict[str, Sink]:
    settings, routes = pickle.loads(body)  # the parent's own socketpair: no one else holds it
    from bridge.infra.logs import configure_logging

    configure_logging(settings.log_level)
    # The webhook sinks import aiohttp on first use (the main process needs it only then); this process
    # exists to send, so it imports it now: the first contact does not wait ~150 ms for the import.
    import aiohttp  # noqa: F401

    sinks = build_sinks(settings, routes, only=portable_routes(routes)).primary
    log.info("delivery process ready", extra={"routes": sorted(sinks), "pid": os.getpid()})
    return sinks


def main(argv: list[str]) -> int:
    fd, parent_pid = int(argv[0]), int(argv[1])
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from bridge.delivery.sender import serve

    asyncio.run(serve(socket.socket(fileno=fd), _setup))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
