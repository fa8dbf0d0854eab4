"""A throwaway redis-server for `sosbridge demo --intake-workers N` (and tests that need a Redis of their
own): intake processes need the Redis store, and the demo stays one command. It runs from PATH on a free
loopback port, its files in the given directory, durable as a deployment's should be (append-only file,
fsync on every write: docs/operations/redis.md), and is stopped when the block ends. See
docs/getting-started.md#the-demo.
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
def throwaway_redis(workdir: Path, durable: bool = True) -> Iterator[str]:
    """A redis-server of our own while the block runs; yields its URL. `durable=False` (tests that only need
    a private Redis): no append-only file."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisNotInstalled("intake processes need Redis, and redis-server is not installed: install it "
                                "(scripts/setup --services does) or pass --redis-url")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         *(["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
