"""A throwaway redis-server for `sosbridge demo --intake-workers N`: intake processes need the Redis store,
and the demo stays one command. It runs from PATH on a free loopback port, its files in the demo's
temporary directory, durable as a deployment's should be (append-only file, fsync on every write:
docs/operations/redis.md), and is stopped with the demo. See docs/getting-started.md#the-demo.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bridge.infra.serving import free_port, wait_port


class RedisNotInstalled(RuntimeError):
    """redis-server is not on PATH: the reason is for the person who ran the demo."""


@contextlib.contextmanager
def throwaway_redis(workdir: Path) -> Iterator[str]:
    """A redis-server of the demo's own while the block runs; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisNotInstalled("intake processes need Redis, and redis-server is not installed: install it "
                                "(scripts/setup --services does) or pass --redis-url")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
