"""Ports for the servers a test starts, chosen so that nothing else on the machine takes them meanwhile.

`bridge.infra.serving.free_port()` asks the kernel for an ephemeral port and leaves it in TIME_WAIT, which
holds it for about a minute. A test's server may bind its port later than that, or bind it again after a
`kill -9`, and the TIME_WAIT is gone once the port has been used: from then on any other process's bind(0)
or outgoing connection may be handed the same port from the ephemeral range (net.ipv4.ip_local_port_range,
32768-60999 here), and the test then talks to a stranger. While the suite runs on two workers beside other
test runs, that window is crossed often enough to matter.

`free_port()` here hands out ports below the ephemeral range, which the kernel never gives to anyone
implicitly: a serial run takes them from 10000-19999, pytest-xdist worker gwN from its own thousand at
20000 + 1000 * N, starting at a random place and never reusing one for a long time; a port something
already holds is skipped. Every port handed out is also claimed machine-wide with a lock file under the
temporary directory, held until the process ends (even by kill -9), so two test runs on one machine (two
clones, or a run beside CI) never hand out the same port between its check and its server's bind.
Docs: docs/testing/deadlines.md ("Running in parallel").
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import random
import socket
import tempfile
import threading
from collections.abc import Iterator

from tests.support.workers import worker_index

_SERIAL = range(10000, 20000)
_PER_WORKER = 1000
_WORKERS_BASE = 20000
_EPHEMERAL_FLOOR = 32768


def _span() -> range:
    index = worker_index()
    if index is None:
        return _SERIAL
    start = _WORKERS_BASE + _PER_WORKER * index
    if start + _PER_WORKER > _EPHEMERAL_FLOOR:
        raise RuntimeError(f"worker gw{index}: no port range of its own below {_EPHEMERAL_FLOOR}")
    return range(start, start + _PER_WORKER)


def _candidates() -> Iterator[int]:
    span = _span()
    first = random.randrange(len(span))
    return itertools.cycle([*span[first:], *span[:first]])


_lock = threading.Lock()
_next: Iterator[int] | None = None


def _bindable(host: str, port: int) -> bool:
    """Free for TCP and UDP on `host` (CoAP listens on UDP; a TCP server and its clients on TCP)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
    return True


_claimed: dict[int, int] = {}  # port -> the open lock file that claims it for this process


def _claim(port: int) -> bool:
    """This process's claim on `port` among every process on the machine (a non-blocking flock)."""
    if port in _claimed:
        return True
    directory = os.path.join(tempfile.gettempdir(), "sosbridge-test-ports")
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, f"{port}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # another test process holds it
    _claimed[port] = fd
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now on `host` that no implicit bind or connect on this machine will be given, and that
    no other test process on the machine is handed."""
    global _next
    with _lock:
        if _next is None:
            _next = _candidates()
        for _ in range(len(_span())):
            port = next(_next)
            if _claim(port) and _bindable(host, port):
                return port
    raise RuntimeError(f"no free port in {_span()}")
