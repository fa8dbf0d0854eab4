"""The reference platform's records as the simulator reads them, and the one percentile it reports with.

- `receiver_records(receiver)`: the records (`received_at`, `idempotency_key`, `contact`) of an embedded
  receiver or a remote one (`simulator/remote.py`); each record's `contact` is the very object its
  `contacts` list holds, so a contact can be traced back to when the platform received it.
- `percentile(values, q)`: nearest-rank, NaN for no values (docs/testing/simulator.md).
"""

from __future__ import annotations

from typing import Any


def receiver_records(receiver: Any) -> list[dict[str, Any]]:
    """The platform's records (`received_at`, `idempotency_key`, `contact`) of an embedded or remote receiver."""
    records = getattr(receiver, "records", None)
    if records is None:
        records = getattr(getattr(receiver, "receiver", None), "records", None)
    return list(records or [])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, int(q / 100 * len(data)))]
