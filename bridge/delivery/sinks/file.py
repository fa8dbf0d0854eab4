"""A durable JSONL spool: the fallback of last resort when the platform cannot be reached.

An operator (or a second control room) watches this file; every line is fsynced before success is
reported, so a contact counted as handed over is on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from bridge.delivery.sinks.base import Delivered, Outcome, Retry
from bridge.infra.private_files import private_file
from bridge.store.base import OutboxItem


class FileSink:
    def __init__(self, path: str | Path, name: str = "file") -> None:
        self.name = name
        self.path = Path(path)
        self._private = False

    def _append(self, line: str) -> None:
        if not self._private:
            private_file(self.path)  # 0600: the spool holds whole contacts (names, locations)
            self._private = True
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    async def deliver(self, item: OutboxItem) -> Outcome:
        line = json.dumps(
            {"idempotency_key": item.idempotency_key, "route": item.route, "contact": json.loads(item.payload)}
        )
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as exc:
            return Retry(f"spool write failed: {exc}")
        return Delivered()

    async def close(self) -> None:
        return None
