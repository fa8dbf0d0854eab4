"""Delivery processes: `sosbridge serve --workers N` starts N-1 of them (N=2: one) and keeps them running.

Main process: the forwarder leases, orders, retries, fails over, records and alarms as with one process;
the platform routes' sinks (webhook, SIP; bridge/app/delivery_sinks.py) are `RemoteSink`s that hand each
contact to a delivery process over a socketpair (bridge/delivery/remote.py) and await its outcome. The
store keeps one writer. A process that exits is started again (alarm `delivery_process_exited`, counted
in `sosbridge_alarms_total`); its unanswered contacts are retried with their own Idempotency-Key.

Delivery process (`python -m bridge.app.delivery_process FD PARENT_PID`): no store, no state; it gets
the settings and routes in the channel's first frame, sends, and ends when the channel closes. It dies
with its parent and ignores SIGINT/SIGTERM, so a Ctrl-C to the process group never cuts a POST the
parent still waits for (bridge/app/child_processes.py starts, restarts and stops them). See
docs/architecture.md ("Processes").
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable

from bridge.app.child_processes import ChildProcesses, die_with_parent
from bridge.app.config import Settings
from bridge.app.delivery_sinks import build_sinks, portable_routes
from bridge.delivery.remote import RemoteDelivery
from bridge.delivery.routing import RoutingTable
from bridge.delivery.sinks.base import Sink
from bridge.infra.channel import frame

log = logging.getLogger("sosbridge.delivery")

ALARM = "delivery_process_exited"
MODULE = "bridge.app.delivery_process"


def default_workers() -> int:
    """2 when the process may run on at least two CPUs, else 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 else 1


def delivery_processes(
    settings: Settings, routes: RoutingTable, count: int, remote: RemoteDelivery,
    raise_alarm: Callable[[str, str], None], clear_alarm: Callable[[str], None],
) -> ChildProcesses:
    """`count` delivery processes, each told the settings and routes in its hello."""
    hello = frame(pickle.dumps((settings, routes)))
    return ChildProcesses("delivery process", MODULE, lambda: hello, count, remote.link, remote.any_ready, ALARM,
                          raise_alarm, clear_alarm)


# -- the delivery process ---------------------------------------------------------------------------------
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
    die_with_parent(parent_pid)
    from bridge.delivery.sender import serve

    asyncio.run(serve(socket.socket(fileno=fd), _setup))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
