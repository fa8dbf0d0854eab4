"""The `disk_low` operational alarm: free space on the filesystems of the SQLite store and the data
directory (spool, keys), checked by the runtime's health loop every second.

Below SOSBRIDGE_DISK_MIN_FREE_MB the store first gives back what it holds but does not need (SQLite's
write-ahead log, up to 4 MiB); if that is not enough the alarm is raised (readiness: degraded, 503) naming
the path and its free bytes; it clears once space returns. A full disk never makes the bridge
acknowledge an alert it could not store (the commit fails, the device is answered 503 and retries); this
alarm is how an operator hears of it before and while it happens. See docs/testing/fault-suite.md (disk full).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bridge.store.base import StoreError

ALARM = "disk_low"


def watched_paths(settings: Any) -> list[Path]:
    """The directories whose filesystems hold the bridge's writes (one per filesystem is enough)."""
    paths = [Path(settings.data_dir)]
    if not settings.redis_url:
        paths.append(Path(settings.db).expanduser().absolute().parent)
    return paths


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on path's filesystem (None if it does not exist)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def low_space(settings: Any) -> str | None:
    """The alarm's detail when a watched filesystem is below the minimum, else None. Pure but for statvfs."""
    minimum = int(settings.disk_min_free_mb * 1024 * 1024)
    for path in watched_paths(settings):
        free = free_bytes(path)
        if free is not None and free < minimum:
            return f"{path}: {free} bytes free, below SOSBRIDGE_DISK_MIN_FREE_MB ({settings.disk_min_free_mb:g} MiB)"
    return None


async def check_disk(runtime: Any) -> None:
    detail = low_space(runtime.settings)
    if detail is not None:
        try:
            freed = await runtime.store.reclaim_space()
        except StoreError:
            freed = 0  # a disk full to the last byte can refuse the checkpoint itself: the alarm still goes up
        if freed:
            detail = low_space(runtime.settings)  # the store gave some back: enough?
    if detail is None:
        runtime.forwarder.clear_alarm(ALARM)
    else:
        runtime.forwarder.raise_alarm(ALARM, detail)
