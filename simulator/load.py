"""`sim load`: virtual devices sending alerts at a target rate, against the embedded stack or a live bridge;
counts and end-to-end latency percentiles (docs/testing/simulator.md).

- One alert per device (each device sends once, with its own message id), so every send is a new alert:
  escalations are 0 unless the bridge folds something, and then they are counted, not hidden. Asking for
  more alerts than there are devices sends one per device and says so.
- Transports: `http` (`POST /v1/alerts` with the device's token; accepted = 202 `created`), `mqtt`
  (QoS 1 on `sosbridge/<tenant>/<device>/alert`; accepted = the broker's PUBACK), and the kinds of
  `simulator/load_kinds.py` (coap, watch, dc09, serial, alexa; accepted = the bridge's answer on that wire).
- Where the wire cannot say whether a press made a new alert or was folded into an open one (all but
  HTTP), a platform `update` for the device is counted as escalated and as delivered, an `alert` as
  delivered.
- The progress callback counts alerts really sent; the report has the achieved rate, and `rate_warning`
  says when it fell short of the asked rate by more than 10 % (the sender, the broker or the bridge was
  the limit).
- Latency runs from a device's send to the platform's receipt of its contact (`received_at` in the
  receiver's records), matched by device id; both clocks must agree (the same host, or NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bridge.core.model import Device
from simulator.load_kinds import KINDS, LoadDevice, Sender, load_identifiers
from simulator.load_kinds import PROFILES as KIND_PROFILES
from simulator.records import percentile, receiver_records

RATE_SHORTFALL = 0.9  # achieved below this share of the asked rate: warn
TRANSPORTS = ("http", "mqtt", *KINDS)


@dataclass
class LoadReport:
    devices: int
    rate: float
    duration_s: float
    transport: str = "http"
    planned: int = 0
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    escalated: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    send_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    drain_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        # n sends at the asked rate span (n - 1) intervals: add the last one so an on-time run reads the rate
        return self.sent / (self.send_s + 1 / self.rate) if self.sent else 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "devices": self.devices,
            "rate_per_s": self.rate,
            "achieved_rate_per_s": round(self.achieved_rate, 1),
            "duration_s": self.duration_s,
            "planned": self.planned,
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
            "warnings": self.warnings,
        }


PROFILES = {"http": "sosbridge-http-wearable", "mqtt": "sosbridge-mqtt-button", **KIND_PROFILES}


async def register_load_devices(store: Any, count: int, transport: str = "http") -> list[LoadDevice]:
    devices = []
    for i in range(count):
        device_id = f"load-{i:05d}"
        token = secrets.token_urlsafe(18)
        identifiers = load_identifiers(transport, i)
        await store.put_device(Device(device_id=device_id, status="exercise", profile_id=PROFILES[transport],
                                      identifiers=identifiers))
        await store.set_credential(device_id, "token", token)
        coap_key = None
        if transport == "coap":
            coap_key = secrets.token_hex(32)
            await store.set_credential(device_id, "coap_hmac", coap_key, hashed=False)
        devices.append(LoadDevice(device_id, token, identifiers=identifiers, coap_key=coap_key))
    return devices


def devices_from_file(path: Path, keys: Path | None = None) -> list[LoadDevice]:
    """The devices of a device file (`sosbridge devices import` format, JSONL or CSV, with tokens), and their
    keys from `keys` (JSON: {device_id: {"coap_hmac": hex, "dc09_key": key}}, as given to the bridge with
    `sosbridge devices coap-key` / `dc09-key`)."""
    from bridge.devices.device_files import read_devices

    secrets_by_device: dict[str, dict[str, str]] = json.loads(keys.read_text()) if keys else {}
    out = []
    for row in read_devices(path):
        own = secrets_by_device.get(row.device.device_id, {})
        out.append(LoadDevice(row.device.device_id, row.token, row.device.tenant_id, dict(row.device.identifiers),
                              own.get("coap_hmac"), own.get("dc09_key")))
    return out


class _MqttSender:
    """QoS 1 publishes from one paho client; a message counts as accepted once the broker PUBACKs it."""

    def __init__(self, url: str, run_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.host, _, port = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].partition(":")
        self.port = int(port or 1883)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-load-{run_id}")
        self.infos: dict[str, Any] = {}

    def __enter__(self) -> _MqttSender:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def publish(self, device: LoadDevice, payload: dict[str, Any]) -> None:
        topic = f"sosbridge/{device.tenant_id}/{device.device_id}/alert"
        self.infos[device.device_id] = self.client.publish(topic, json.dumps(payload), qos=1)

    def wait_acked(self, timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        for info in self.infos.values():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                info.wait_for_publish(timeout=remaining)
            except (RuntimeError, ValueError):
                continue
        return {device_id for device_id, info in self.infos.items() if info.is_published()}


async def run_load(
    bridge_url: str | None,
    receiver: Any,
    devices: list[LoadDevice],
    rate: float,
    duration_s: float,
    transport: str = "http",
    mqtt_url: str | None = None,
    drain_timeout_s: float = 30.0,
    on_progress: Callable[[int, int], None] | None = None,
    sender: Sender | None = None,
) -> LoadReport:
    """`sender`: the kind's sender (simulator/load_kinds.py) for a transport other than http and mqtt."""
    report = LoadReport(devices=len(devices), rate=rate, duration_s=duration_s, transport=transport)
    asked = int(rate * duration_s)
    report.planned = min(asked, len(devices))
    if asked > len(devices):
        report.warnings.append(f"asked for {asked} alerts but there are {len(devices)} devices: one alert per "
                               f"device, so {len(devices)} (add devices to send more)")
    run_id = secrets.token_hex(3)
    sent_at: dict[str, float] = {}  # device id -> wall-clock send time
    accepted: set[str] = set()
    plan = devices[: report.planned]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    mqtt_sender = _MqttSender(mqtt_url, run_id) if transport == "mqtt" and mqtt_url else None
    if transport == "mqtt" and mqtt_sender is None:
        raise ValueError("--transport mqtt needs --mqtt-url")
    if transport in KINDS and sender is None:
        raise ValueError(f"--transport {transport} needs its sender")
    async with httpx.AsyncClient(base_url=bridge_url or "http://127.0.0.1", timeout=10, limits=limits) as client:

        async def send_http(device: LoadDevice, body: dict[str, Any]) -> None:
            try:
                r = await client.post("/v1/alerts", json=body, headers={"Authorization": f"Bearer {device.token}"})
                outcome = r.json().get("outcome") if r.status_code == 202 else None
            except (httpx.HTTPError, ValueError):
                outcome = None
            if outcome == "created":
                accepted.add(device.device_id)
            elif outcome is not None:
                report.escalated += 1  # folded into an open alert: counted, never hidden
            else:
                report.refused += 1

        async def send_kind(device: LoadDevice, message_id: str) -> None:
            assert sender is not None
            try:
                ok = await sender.send(device, message_id)
            except (OSError, TimeoutError, ValueError, ConnectionError):
                ok = False
            if ok:
                accepted.add(device.device_id)
            else:
                report.refused += 1

        tasks: set[asyncio.Task[None]] = set()
        async with contextlib.AsyncExitStack() as exits:
            if mqtt_sender is not None:
                exits.enter_context(mqtt_sender)
            if sender is not None:
                await exits.enter_async_context(sender)
            # One line carries one frame at a time (serial): each send is awaited, so the achieved rate is
            # the line's, and a rate it cannot carry is warned about.
            sequential = bool(getattr(sender, "sequential", False))
            if sender is not None:
                await asyncio.wait_for(sender.prepare(plan), 60)
            start = time.monotonic()
            for n, device in enumerate(plan):
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = {"kind": "sos", "message_id": f"load-{run_id}-{device.device_id}"}
                sent_at[device.device_id] = time.time()
                if mqtt_sender is not None:
                    mqtt_sender.publish(device, body)
                else:
                    sending = send_http(device, body) if sender is None else send_kind(device, body["message_id"])
                    if sequential:
                        await asyncio.wait_for(sending, 60)
                    else:
                        task = asyncio.create_task(sending)
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                report.sent += 1
                if on_progress:
                    on_progress(report.sent, report.planned)
            report.send_s = time.monotonic() - start
            if tasks:
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
            if mqtt_sender is not None:
                accepted = await asyncio.to_thread(mqtt_sender.wait_acked, 30)
                report.refused = report.sent - len(accepted)
    report.accepted = len(accepted)
    if report.sent and report.achieved_rate < RATE_SHORTFALL * rate:
        report.warnings.append(f"asked for {rate:g} alerts/s, sent {report.achieved_rate:.1f}/s: the sender, the "
                               "broker or the bridge was the limit, so latencies are not at the asked rate")
    drain_start = time.monotonic()

    def arrived(contacts: list[dict[str, Any]]) -> bool:
        return {c["device"]["id"] for c in contacts if c.get("msg_type") == "alert"} >= accepted

    try:
        await receiver.wait_for(arrived, timeout=drain_timeout_s)
    except TimeoutError:
        pass
    report.drain_s = time.monotonic() - drain_start
    seen: dict[str, int] = {}
    delivered: set[str] = set()
    for record in receiver_records(receiver):
        contact = record.get("contact") or {}
        device_id = (contact.get("device") or {}).get("id", "")
        if device_id not in sent_at:
            continue  # not this run's
        key = record["idempotency_key"]
        seen[key] = seen.get(key, 0) + 1
        if contact.get("msg_type") == "alert" and seen[key] == 1:
            delivered.add(device_id)
            report.latencies_ms.append((record["received_at"] - sent_at[device_id]) * 1000)
        elif (contact.get("msg_type") == "update" and seen[key] == 1 and transport != "http"
              and record["received_at"] >= sent_at[device_id]):
            report.escalated += 1  # the press was folded into the device's open alert: delivered as an update
            if device_id not in delivered:
                delivered.add(device_id)
                report.latencies_ms.append((record["received_at"] - sent_at[device_id]) * 1000)
    report.delivered = len(delivered & accepted)
    report.lost = len(accepted - delivered)
    report.duplicates = sum(n - 1 for n in seen.values() if n > 1)
    return report

