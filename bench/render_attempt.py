#!/usr/bin/env python3
"""CPU per delivery attempt spent on the body, before and after bodies are rendered when queued.

Before: every attempt parsed the row's contact and rendered it (CAP 1.2, NENA EIDO, PIDF-LO). After: the
body is rendered once at queue time (`WebhookSink.render_ahead`) and each attempt only takes the stored
text (`render_body` on a row with a body). Both add the signature, which every attempt computes afresh.
Process CPU time over `--n` attempts per format, in one process; no I/O. Prints a Markdown table.
`bench/render_attempt.py [--n 2000]`; docs/testing/benchmarks.md has a recorded run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bridge.core.contact import build_contact  # noqa: E402
from bridge.core.geo import enrich_location  # noqa: E402
from bridge.core.model import Alert, AlertKind, AlertState, Device, Location, Person, Severity  # noqa: E402
from bridge.delivery.sinks.signing import sign  # noqa: E402
from bridge.delivery.sinks.webhook import WebhookSink, render_body  # noqa: E402
from bridge.store.base import OutboxItem  # noqa: E402

SECRET = "bench-render-secret-0123456789abcdef"
FORMATS = ("cap", "eido", "pidf")


def sample_item() -> OutboxItem:
    t0 = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
    fix = enrich_location(Location(lat=55.948611, lon=-3.200833, accuracy_m=12.5, source="gnss", fix_time=t0))
    alert = Alert(alert_id="01JQ7ZK3M4N5P6Q7R8S9T0V1W2", tenant_id="t", device_id="pendant-1", kind=AlertKind.panic,
                  severity=Severity.severe, silent=True, status="actual", state=AlertState.received,
                  occurred_at=t0, received_at=t0, updated_at=t0, transport="mqtt", location=fix)
    device = Device(device_id="pendant-1", tenant_id="t", label="SOS pendant",
                    person=Person(name="A Person", phone="+44 7700 900123", language="en-GB"))
    c = build_contact(alert, device, "alert", 1, None, "https://bridge.example.org", created_at=t0)
    return OutboxItem(item_id="i1", alert_id=c.alert_id, seq=1, msg_type="alert", idempotency_key=c.contact_id,
                      payload=c.to_json(), critical=True, created_at=time.time())


def cpu_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(50, n)):
        fn()  # warm caches (schemas, lazy imports) outside the measurement
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


def measure(fmt: str, n: int) -> tuple[float, float, float]:
    """(µs per attempt rendering each time, µs per attempt from the stored body, µs to render when queued)."""
    sink = WebhookSink("http://127.0.0.1:9/contacts", SECRET, fmt)
    plain, stored = sample_item(), sample_item()
    sink.render_ahead(stored)
    assert stored.body is not None and render_body(stored, fmt) == render_body(plain, fmt)

    def attempt(item: OutboxItem) -> None:
        body, _ = render_body(item, fmt)
        sign(body, SECRET, item.idempotency_key)

    before = cpu_us(lambda: attempt(plain), n)
    after = cpu_us(lambda: attempt(stored), n)
    queue = cpu_us(lambda: sink.render_ahead(sample_item()), max(1, n // 4)) - cpu_us(sample_item, max(1, n // 4))
    return before, after, queue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="attempts per format and variant")
    n = parser.parse_args(argv).n
    print("| format | per attempt, rendered each time (µs) | per attempt, stored body (µs) | once at queue time (µs) |")
    print("|---|---:|---:|---:|")
    for fmt in FORMATS:
        before, after, queue = measure(fmt, n)
        print(f"| {fmt} | {before:.0f} | {after:.1f} | {queue:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
