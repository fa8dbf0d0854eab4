"""`sim load`: many virtual wearables at a target rate; counts and end-to-end latency percentiles.

Latency runs from the moment a device sends to the receiver's receipt of the contact (same clock: both run
here). Each device waits for its previous alert to be resolved by the receiver before it can open a new one,
so every send is a new alert, not an escalation.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bridge.core.model import Device


@dataclass
class LoadReport:
    devices: int
    rate: float
    duration_s: float
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    escalated: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    drain_s: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q / 100 * len(data)))]

    def summary(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "rate_per_s": self.rate,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "accepted": self.accepted,
            "refused": self.refused,
            "escalated": self.escalated,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "latency_ms_p50": round(self.percentile(50), 2),
            "latency_ms_p95": round(self.percentile(95), 2),
            "latency_ms_p99": round(self.percentile(99), 2),
            "latency_ms_mean": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else None,
            "drain_s": round(self.drain_s, 2),
        }


async def register_load_devices(store: Any, count: int) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for i in range(count):
        device_id = f"load-{i:05d}"
        token = secrets.token_urlsafe(18)
        await store.put_device(Device(device_id=device_id, status="exercise", profile_id="sosbridge-http-wearable"))
        await store.set_credential(device_id, "token", token)
        tokens[device_id] = token
    return tokens


async def run_load(
    bridge_url: str,
    receiver: Any,
    tokens: dict[str, str],
    rate: float,
    duration_s: float,
    drain_timeout_s: float = 30.0,
    on_progress: Any = None,
) -> LoadReport:
    report = LoadReport(devices=len(tokens), rate=rate, duration_s=duration_s)
    device_ids = list(tokens)
    accepted: dict[str, float] = {}  # alert id -> send time
    busy: set[str] = set()
    total = int(rate * duration_s)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=bridge_url, timeout=10, limits=limits) as client:

        async def send(device_id: str) -> None:
            sent_at = time.time()
            try:
                r = await client.post(
                    "/v1/alerts",
                    json={"kind": "sos", "attributes": {"sent_at": sent_at}},
                    headers={"Authorization": f"Bearer {tokens[device_id]}"},
                )
                body = r.json()
                if r.status_code == 202 and body.get("outcome") == "created":
                    report.accepted += 1
                    accepted[body["alert_id"]] = sent_at
                elif r.status_code == 202:
                    report.escalated += 1  # its previous alert was still open: folded, not lost
                else:
                    report.refused += 1
            except httpx.HTTPError:
                report.refused += 1
            finally:
                busy.discard(device_id)

        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for n in range(total):
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            device_id = device_ids[n % len(device_ids)]
            if device_id in busy:
                continue
            busy.add(device_id)
            report.sent += 1
            task = asyncio.create_task(send(device_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if on_progress:
                on_progress(n + 1, total)
        if tasks:
            await asyncio.gather(*tasks)
    drain_start = time.monotonic()
    try:
        await receiver.wait_for(
            lambda cs: {c["alert_id"] for c in cs if c.get("msg_type") == "alert"} >= set(accepted),
            timeout=drain_timeout_s,
        )
    except TimeoutError:
        pass
    report.drain_s = time.monotonic() - drain_start
    seen: dict[str, int] = {}
    for record in getattr(getattr(receiver, "receiver", None), "records", []) or []:
        seen[record["idempotency_key"]] = seen.get(record["idempotency_key"], 0) + 1
        contact = record.get("contact") or {}
        sent_at = accepted.get(contact.get("alert_id", ""))
        if contact.get("msg_type") == "alert" and sent_at is not None and seen[record["idempotency_key"]] == 1:
            report.latencies_ms.append((record["received_at"] - sent_at) * 1000)
    delivered_ids = {c["alert_id"] for c in receiver.contacts if c.get("msg_type") == "alert"}
    report.delivered = len(delivered_ids & set(accepted))
    report.lost = len(set(accepted) - delivered_ids)
    report.duplicates = sum(n - 1 for n in seen.values() if n > 1)
    return report
