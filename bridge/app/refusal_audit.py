"""Refused device credentials, audited without letting a flood of them flood the audit log: one summary
row per source and interval, a bounded number of rows and sources. See docs/operations/security.md.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from bridge.core.model import utcnow


class RefusalAudit:
    """Refused credentials, audited as one summary row per source and interval.

    The first refusal of a source in an interval is written at once (an operator sees an attack begin);
    the rest are counted and written as one row when the interval ends (`flush`, from the health loop, or
    the source's next refusal after it). At most `max_rows` rows per interval in all: sources beyond that
    are summed into one `source:*` row, so a crowd of addresses cannot turn refusals into disk writes
    either. Memory is bounded by `max_sources`.
    """

    def __init__(self, interval_s: float = 60.0, max_rows: int = 100, max_sources: int = 10_000) -> None:
        self.interval_s = interval_s
        self.max_rows = max_rows
        self.max_sources = max_sources
        # source -> [interval start, refusals not yet written, last reason]
        self._open: OrderedDict[str, list[Any]] = OrderedDict()
        self._overflow = 0
        self._rows_start = 0.0
        self._rows = 0

    def _row_allowed(self, now: float) -> bool:
        if now - self._rows_start >= self.interval_s:
            self._rows_start, self._rows = now, 0
        if self._rows >= self.max_rows:
            return False
        self._rows += 1
        return True

    def record(self, source: str, reason: str, now: float) -> list[tuple[str, str]]:
        """Count one refusal; returns the rows (actor, detail) to write now."""
        rows: list[tuple[str, str]] = []
        entry = self._open.get(source)
        if entry is not None and now - entry[0] >= self.interval_s:
            rows += self._close(source, entry, now)
            entry = None
        if entry is None:
            self._open[source] = [now, 0, reason]
            if len(self._open) > self.max_sources:
                _old, old_entry = self._open.popitem(last=False)
                self._overflow += old_entry[1]
            if self._row_allowed(now):
                rows.append((f"source:{source}", reason))
            else:
                self._overflow += 1
        else:
            entry[1] += 1
            entry[2] = reason
        return rows

    def _close(self, source: str, entry: list[Any], now: float) -> list[tuple[str, str]]:
        self._open.pop(source, None)
        if entry[1] == 0:
            return []
        if not self._row_allowed(now):
            self._overflow += entry[1]
            return []
        return [(f"source:{source}", f"{entry[2]}; {entry[1]} more refused in {self.interval_s:.0f} s")]

    def flush(self, now: float) -> list[tuple[str, str]]:
        """Rows for every interval that has ended (oldest first), and the overflow row."""
        rows: list[tuple[str, str]] = []
        while self._open:
            source, entry = next(iter(self._open.items()))
            if now - entry[0] < self.interval_s:
                break
            rows += self._close(source, entry, now)
        if self._overflow:
            rows.append(("source:*", f"{self._overflow} refusals from sources past the audit row limit"))
            self._overflow = 0
        return rows


async def audit_refusal(runtime: Any, source: str, reason: str, now: float) -> None:
    """Audit one refused device credential (summarised; see RefusalAudit)."""
    for actor, detail in runtime.refusals.record(source, reason, now):
        await runtime.store.audit(utcnow(), actor, "credential_refused", "device_token", detail)


async def flush_refusals(runtime: Any, now: float) -> None:
    for actor, detail in runtime.refusals.flush(now):
        await runtime.store.audit(utcnow(), actor, "credential_refused", "device_token", detail)
