"""Processes `sosbridge serve` starts beside itself, each on a socketpair, kept running until it stops.

`ChildProcesses` starts `count` children (`python -m MODULE FD PARENT_PID`), sends each its hello (made
when it starts: it may say what changed since the first), waits
for its READY, and starts again one that exits or never became ready (alarm `alarm`, counted in
`sosbridge_alarms_total`, cleared once the new one is ready; back-off from 0.1 s to 30 s). `stop()` closes
every channel: a child ends on EOF, and is killed if it has not within 5 s. The channel's protocol
(a `ParentEnd`) is the caller's: delivery (bridge/delivery/remote.py) and intake (bridge/app/intake.py).

A child dies with its parent (`die_with_parent`: PR_SET_PDEATHSIG, and EOF on its channel) and ignores
SIGINT/SIGTERM: stopping is the parent's call, so a Ctrl-C to the process group never cuts work the
parent still waits for. See docs/architecture.md ("Processes").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from bridge.infra.aio import stop_tasks, wait_event
from bridge.infra.channel import ParentEnd

log = logging.getLogger("sosbridge.processes")

READY_TIMEOUT_S = 30.0  # a child imports the stack (aiohttp, the formats, the store): about half a second
EXIT_TIMEOUT_S = 5.0
PR_SET_PDEATHSIG = 1
RESTART_MAX_S = 30.0


class ChildProcesses:
    def __init__(
        self, what: str, module: str, hello: Callable[[], bytes], count: int, make_link: Callable[[int], ParentEnd],
        any_ready: asyncio.Event, alarm: str,
        raise_alarm: Callable[[str, str], None], clear_alarm: Callable[[str], None],
    ) -> None:
        self.what = what  # "delivery process": how logs and alarms name one
        self.module = module
        self.hello = hello
        self.count = count
        self.make_link = make_link
        self.any_ready = any_ready
        self.alarm = alarm
        self.raise_alarm = raise_alarm
        self.clear_alarm = clear_alarm
        self.pids: list[int | None] = [None] * count
        self._links: dict[int, ParentEnd] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._supervise(i), name=f"{self.what}-{i}".replace(" ", "-"))
                       for i in range(self.count)]
        if not await wait_event(self.any_ready, READY_TIMEOUT_S):
            self.raise_alarm(self.alarm, f"no {self.what} ready within {READY_TIMEOUT_S:g} s")

    async def _supervise(self, index: int) -> None:
        delay = 0.1
        while not self._stopping:
            started = time.monotonic()
            code: int | str | None
            try:
                code = await self._run_one(index)
            except (OSError, RuntimeError) as exc:  # a socket or a process that could not be set up
                log.error(f"{self.what} failed", extra={"index": index, "error": repr(exc)})
                code = repr(exc)
            if self._stopping:
                return
            self.raise_alarm(self.alarm, f"{self.what} {index} exited ({code}); started again")
            delay = 0.1 if time.monotonic() - started > 10 else min(RESTART_MAX_S, delay * 2)
            await asyncio.sleep(delay)

    async def _run_one(self, index: int) -> int | None:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module, str(theirs.fileno()), str(os.getpid()),
                pass_fds=[theirs.fileno()], stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            log.error(f"{self.what} not started", extra={"error": repr(exc)})
            return None
        finally:
            theirs.close()
        self.pids[index] = proc.pid
        loop = asyncio.get_running_loop()
        _, link = await loop.create_connection(lambda: self.make_link(index), sock=ours)
        self._links[index] = link
        if self._stopping:  # stop() came while it was starting: it ends at once with its channel
            link.close()
        link.send_raw(self.hello())
        log.info(f"{self.what} started", extra={"index": index, "pid": proc.pid})
        exited = asyncio.ensure_future(proc.wait())
        ready = asyncio.ensure_future(wait_event(link.ready_event, READY_TIMEOUT_S))
        try:
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            if link.ready:
                if not self._stopping:
                    self.clear_alarm(self.alarm)
                ended: set[asyncio.Future[Any]] = {link.lost, exited}
                await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
            elif not exited.done() and not self._stopping:  # stuck before ready: ended, started again
                log.error(f"{self.what} not ready in time", extra={"pid": proc.pid})
            link.close()  # the channel is gone or the process is: end both
            await asyncio.wait({exited}, timeout=EXIT_TIMEOUT_S)  # EOF: it ends what it runs and exits
            if not exited.done():
                log.warning(f"{self.what} did not exit with its channel; killed", extra={"pid": proc.pid})
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
        """Close every channel: each child ends what it runs and exits; wait for them."""
        self._stopping = True
        for link in list(self._links.values()):
            link.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2 * EXIT_TIMEOUT_S + 1)
        await stop_tasks(self._tasks)


def die_with_parent(parent_pid: int) -> None:
    """In a child, first thing: killed when its parent dies; SIGINT and SIGTERM are the parent's to act on."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above: nobody would stop us
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
