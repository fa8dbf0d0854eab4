"""`python -m bench.run [--smoke] [--no-nodered] [--only STEP ...] [--n N]`: the whole benchmark.

One broker and one recording receiver (bench/recorder.py) serve every contender in the run, so the ratios
in the summary come from one run. Steps (docs/testing/benchmarks.md says what each one means):

  validate  the bridge against the reference (validating) receiver: every contact must be valid
  ceiling   the recording receiver's own rate, POSTed at directly
  raw       mosquitto_pub → mosquitto_sub (the broker alone) and a subscribe-only paho client (latency)
  bridge    N alerts from N distinct registered devices, then 500/s paced (SQLite, durable)
  redis     the same with the Redis store (not by default: --only ... redis)
  sentinel  the same on Redis Sentinel (primary, 2 replicas, 3 sentinels, the replication guard; not by default)
  intake    the same on Redis with intake processes (--intake-workers, default 1; not by default)
  relay     the thin paho relay: the same N alerts and the paced run
  nodered   Node-RED 4.1 (npm install at bench time): the same
  storm     10,000 devices + 100,000 duplicate presses, a new device's SOS in the middle
  fairness  device A floods presses and locations, device B's SOS latency with and without A
  rest      RSS/CPU at rest and cold start
  http      the bridge's HTTP ingress (not by default)

Prints one Markdown table per workload and a summary of the issue's targets; writes
bench/results/<timestamp>.json (and latest.json). Every load loop is bounded in count and time; everything
listens on 127.0.0.1 only; every process is stopped by its pid.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import nodered
from bench.common import (
    PY,
    ROOT,
    Proc,
    Sampler,
    cpu_s,
    latency_summary,
    machine,
    rss_mb,
    spawn,
    start_mosquitto,
    start_redis,
    table,
    which,
)
from bench.harness import (
    SECRET,
    Bridge,
    ReceiverClient,
    RecorderClient,
    RunResult,
    bridge_env,
    measure,
    start_bridge,
    stop_quietly,
)
from bench.load import Msg, Publisher, button_alert, ready_contact
from bench.redis_memory import redis_stats
from bench.seed import TENANT, seed_sync
from bench.wearables import HttpRun, http_send

RESULTS = ROOT / "bench" / "results"
DEFAULT_STEPS = ["validate", "ceiling", "raw", "bridge", "relay", "nodered", "storm", "fairness", "rest"]
ALL_STEPS = [*DEFAULT_STEPS[:4], "redis", "sentinel", "intake", *DEFAULT_STEPS[4:], "http"]
ALIASES = {"sqlite": "bridge", "flood": "bridge"}  # the step names of the earlier bench


@dataclass(frozen=True)
class Sizes:
    n: int = 20_000  # the flood: one alert from each of n distinct registered devices, every contender
    warm: int = 20  # unmeasured alerts before a contender's flood (connections, caches)
    validate_n: int = 1000
    ceiling_n: int = 50_000
    ceiling_conns: int = 8
    paced_rate: float = 500.0
    paced_s: float = 10.0
    paced_warm: int = 1000
    storm_devices: int = 10_000
    storm_dups: int = 100_000
    storm_window_s: float = 10.0
    fair_s: float = 20.0  # each phase: B alone, then A flooding while B sends
    fair_b_every_s: float = 0.2
    fair_a_max: int = 400_000
    fair_a_rate: float = 3000.0  # A's paced phase, frames/s (0: skipped); then A floods as fast as it can
    rest_devices: int = 10_000
    rest_tries: int = 3
    rest_s: float = 5.0
    after_s: float = 5.0  # "RSS after the flood" is read this long after the last delivery
    http_n: int = 2000
    intake_workers: int = 1  # the intake step's intake processes (beside the main and delivery processes)
    timeout_s: float = 300.0


SMOKE = Sizes(n=300, warm=5, validate_n=50, ceiling_n=2000, ceiling_conns=4, paced_rate=100.0, paced_s=1.0,
              paced_warm=50, storm_devices=100, storm_dups=600, storm_window_s=1.0, fair_s=2.0, fair_a_max=1000,
              rest_devices=300, rest_tries=1, rest_s=1.0, after_s=1.0, http_n=100, timeout_s=20.0)

# The targets of issue 27 (the capacity issue; first set by issue 13), checked in the summary.
TARGET_VS_RELAY = 0.5
TARGET_VS_NODERED = 1.5
TARGET_P99_MS = 5.0
TARGET_PROBE_S = 1.0
TARGET_FAIRNESS = 2.0  # A paced at fair_a_rate: B's p99 at most this many times its p99 alone
TARGET_FLAT_OUT_S = 1.0  # A flat out: B's p99 at most this, all of B delivered
TARGET_RSS_MB = 150.0
TARGET_HTTP_RATE = 1500.0  # issue 27 item 6: POST /v1/alerts, 16 clients, 2xx only after the commit
TARGET_HTTP_P99_MS = 50.0


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def metrics_text(url: str) -> str | None:
    """The bridge's own /metrics (None if unreadable)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return None


def loop_lag(url: str) -> dict[str, float] | None:
    """The bridge's event-loop lag since it started (`sosbridge_event_loop_lag_seconds`, a 0.1 s timer's
    lateness): the bucket bounds that hold its p99 and its maximum, and the samples. None if unreadable."""
    text = metrics_text(url)
    if text is None:
        return None
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("sosbridge_event_loop_lag_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    buckets.sort()
    total = buckets[-1][1]
    p99 = next(le for le, count in buckets if count >= 0.99 * total)
    top = next(le for le, count in buckets if count >= total)
    return {"p99_s": p99, "max_s": top, "samples": int(total)}


def stored_and_delivered(text: str) -> tuple[int, int]:
    """New alerts stored and contacts delivered so far, from the text of the bridge's /metrics. Pure."""
    stored = delivered = 0.0
    for line in text.splitlines():
        if line.startswith("sosbridge_alerts_accepted_total{") and 'outcome="created"' in line:
            stored += float(line.rsplit(" ", 1)[1])
        elif line.startswith("sosbridge_deliveries_total{") and 'outcome="delivered"' in line:
            delivered += float(line.rsplit(" ", 1)[1])
    return int(stored), int(delivered)


def gauge(text: str, name: str) -> float | None:
    """One unlabelled gauge from the text of the bridge's /metrics (None if absent). Pure."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def synthetic_contact() -> dict[str, Any]:
    """A contact-shaped body for the relays when no bridge contact was captured (--only without bridge)."""
    return {
        "schema": "sosbridge.contact/1", "contact_id": "x:1", "alert_id": "x", "seq": 1, "msg_type": "alert",
        "status": "exercise", "kind": "sos", "severity": "extreme", "silent": False, "state": "open",
        "escalation_count": 0, "reason": None, "tenant_id": TENANT, "occurred_at": "2026-01-01T00:00:00Z",
        "received_at": "2026-01-01T00:00:00Z", "created_at": "2026-01-01T00:00:00Z",
        "device": {"id": "x", "profile": "sosbridge-mqtt-button", "transport": "mqtt", "label": "bench button"},
        "person": {"name": "Bench x", "language": "en-GB"}, "language": "en-GB", "communication_needs": [],
        "location": {"lat": 51.5007, "lon": -0.1246, "accuracy_m": 8.0}, "verified": True, "references": [],
        "attributes": {"battery": 87}, "links": {"ack": None, "resolve": None},
    }


class Bench:
    def __init__(self, sizes: Sizes, workdir: Path, args: argparse.Namespace) -> None:
        self.s = sizes
        self.w = workdir
        self.args = args
        self.out: dict[str, Any] = {"machine": machine(), "sizes": dataclasses.asdict(sizes), "runs": {},
                                    "notes": []}
        self.broker: Proc | None = None
        self.broker_port = 0
        self.rx: RecorderClient | None = None
        self.template: dict[str, Any] | None = None
        # --intake-on-redis: the storm, fairness and http steps' bridge runs on this Redis (a database of its
        # own each) with intake processes, the configuration that scales past one core.
        self.scaled_redis: Proc | None = None
        self.scaled_url: str | None = None
        self.scaled_dbs = iter(range(2, 16))

    # -- infrastructure ----------------------------------------------------------------------------------
    def __enter__(self) -> Bench:
        self.broker, self.broker_port = start_mosquitto(self.w, inflight=self.args.broker_inflight)
        self.rx = RecorderClient(self.w)
        if getattr(self.args, "intake_on_redis", False):
            self.scaled_redis, port = start_redis(self.w)
            self.scaled_url = f"redis://127.0.0.1:{port}/"
            self.out["scaled"] = f"Redis, {plural(self.s.intake_workers, 'intake process')} (storm, fairness, http)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rx is not None:
            self.rx.close()
        stop_quietly(self.broker, self.scaled_redis)

    @property
    def recorder(self) -> RecorderClient:
        assert self.rx is not None
        return self.rx

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.out["notes"].append(text)

    def record(self, key: str, result: RunResult | dict[str, Any]) -> dict[str, Any]:
        data = result.as_dict() if isinstance(result, RunResult) else result
        self.out["runs"][key] = data
        print(f"  {key}: {json.dumps({k: v for k, v in data.items() if k != 'extra'}, default=str)[:300]}",
              flush=True)
        return data

    def publish(self, msgs: list[Msg], rate: float | None = None, inflight: int = 1000) -> dict[str, float]:
        pub = Publisher(self.broker_port, inflight=inflight)
        try:
            sent = pub.send(msgs, rate=rate, deadline_s=self.s.timeout_s)
            pub.wait_acked(len(msgs), timeout_s=self.s.timeout_s)
            return sent
        finally:
            pub.close()

    def contact_template(self) -> dict[str, Any]:
        if self.template is None:
            self.note("no bridge contact captured yet: the relays carry a synthetic contact-shaped body")
            self.template = synthetic_contact()
        return self.template

    def fresh_bridge(self, name: str, mqtt_ids: list[str], receiver_url: str | None = None,
                     redis_url: str | None = None, http_ids: list[str] | None = None,
                     extra_env: dict[str, str] | None = None) -> Bridge:
        """A bridge on its own new database, seeded with exactly these devices."""
        if self.scaled_url is not None and name in ("storm", "fairness", "http"):
            redis_url = f"{self.scaled_url}{next(self.scaled_dbs)}"
            extra_env = {**(extra_env or {}), "SOSBRIDGE_INTAKE_WORKERS": str(self.s.intake_workers)}
        env = bridge_env(self.w, name, receiver_url or self.recorder.url, self.broker_port, redis_url, extra_env)
        from bridge.app.config import Settings

        t0 = time.monotonic()
        seed_sync(Settings(db=env["SOSBRIDGE_DB"], redis_url=redis_url), mqtt_ids, http_ids or [])
        seeded_s = time.monotonic() - t0
        bridge = start_bridge(self.w, name, env)
        print(f"  [{name}] seeded {len(mqtt_ids) + len(http_ids or [])} devices in {seeded_s:.1f} s, "
              f"ready in {bridge.ready_s:.1f} s", flush=True)
        self.out.setdefault("seeding_s", {})[name] = round(seeded_s, 2)
        return bridge

    # -- validation: the bridge against the reference receiver -----------------------------------------
    def validate(self) -> None:
        n = self.s.validate_n
        rx = ReceiverClient(self.w)
        bridge: Bridge | None = None
        try:
            keys = ids("v", n)
            bridge = self.fresh_bridge("validate", keys, receiver_url=rx.url)
            msgs = [button_alert(k) for k in keys]
            res = measure(f"bridge → validating receiver, {n} alerts", rx, keys, lambda: self.publish(msgs),
                          self.s.timeout_s)
            rows = rx.rows()
            valid = sum(1 for r in rows if r[4])
            stats = rx.stats()
            res.extra.update(records=len(rows), valid=valid, invalid=len(rows) - valid,
                             rejected=stats.get("rejected", 0))
            self.record("validate", res)
            full = [r for r in rx.full_records() if r.get("contact")]
            if full:
                self.template = full[0]["contact"]
            if res.delivered < n or valid < len(rows) or stats.get("rejected"):
                self.note(f"validation: {res.delivered}/{n} delivered, {len(rows) - valid} invalid, "
                          f"{stats.get('rejected', 0)} refused by the receiver")
        finally:
            stop_quietly(bridge.proc if bridge else None)
            rx.close()

    # -- the recorder's own ceiling ------------------------------------------------------------------------
    def ceiling(self) -> None:
        body = self.w / "ceiling-body.json"
        tpl = self.contact_template()
        body.write_bytes(ready_contact(tpl, "ceiling", "-").payload)
        rx = self.recorder
        rx.reset()
        cpu0 = cpu_s(rx.proc.pid)
        out = subprocess.run(
            [PY, "-m", "bench.recorder", "--blast", rx.url, str(self.s.ceiling_n), str(self.s.ceiling_conns),
             str(body)], capture_output=True, text=True, timeout=self.s.timeout_s + 30, check=True, cwd=ROOT)
        busy_s = cpu_s(rx.proc.pid) - cpu0
        client = json.loads(out.stdout.strip().splitlines()[-1])
        stats = rx.stats()
        span = (stats["last_at"] or 0) - (stats["first_at"] or 0)
        # the share of one core the receiver used while POSTs arrived; rate / share estimates what it could
        # take if the client (one Python process) were not the limit
        busy = min(1.0, busy_s / span) if span > 0 else None
        rate = stats["rate_per_s"]
        self.record("ceiling", {
            "label": "POST straight at the recording receiver", "expected": self.s.ceiling_n,
            "delivered": stats["count"], "rate_per_s": rate, "conns": self.s.ceiling_conns,
            "errors": client["errors"], "receiver_busy_pct": round(100 * busy, 1) if busy else None,
            "ceiling_estimate_per_s": round(rate / busy) if rate and busy else None,
            "body_bytes": body.stat().st_size,
        })
        rx.reset()

    # -- the raw broker --------------------------------------------------------------------------------------
    def raw(self) -> None:
        pub_bin, sub_bin = which("mosquitto_pub"), which("mosquitto_sub")
        tpl = self.contact_template()
        if not pub_bin or not sub_bin:
            self.note("mosquitto-clients missing: raw broker throughput skipped")
        else:
            n = self.s.n
            lines = self.w / "raw.txt"
            with open(lines, "w") as fh:
                for k in ids("x", n):
                    fh.write(ready_contact(tpl, k, "-").payload.decode() + "\n")
            port = str(self.broker_port)
            sub = subprocess.Popen([sub_bin, "-h", "127.0.0.1", "-p", port, "-t", "bench/raw/all", "-q", "1",
                                    "-C", str(n)], stdout=subprocess.DEVNULL)
            try:
                time.sleep(0.5)  # let the subscription land before the first publish
                t0 = time.monotonic()
                with open(lines, "rb") as fh:
                    subprocess.run([pub_bin, "-h", "127.0.0.1", "-p", port, "-t", "bench/raw/all", "-q", "1", "-l"],
                                   stdin=fh, check=True, timeout=self.s.timeout_s)
                sub.wait(self.s.timeout_s)
                elapsed = time.monotonic() - t0
                self.record("raw_flood", {"label": "mosquitto_pub → mosquitto_sub (QoS 1)", "expected": n,
                                          "delivered": n, "rate_per_s": round(n / elapsed, 1),
                                          "elapsed_s": round(elapsed, 3)})
            except subprocess.TimeoutExpired:
                self.note("mosquitto_sub did not receive every raw message in time")
            finally:
                if sub.poll() is None:
                    sub.kill()
                    sub.wait(5)
        # latency: a subscribe-only paho client stamps receipt times (no POST after it)
        warm, keys = self._paced_keys("xp")
        total = warm + keys
        out = self.w / "rawsub.json"
        proc = spawn("rawsub", [PY, "-m", "bench.rawsub", str(self.broker_port), "bench/rawsub/+", str(len(total)),
                                str(out)], self.w)
        try:
            time.sleep(0.5)
            msgs = [ready_contact(tpl, k, f"bench/rawsub/{k}") for k in total]
            sent = self.publish(msgs, rate=self.s.paced_rate)
            deadline = time.monotonic() + self.s.timeout_s
            while not out.exists() and time.monotonic() < deadline and proc.proc.poll() is None:
                time.sleep(0.05)
        finally:
            proc.stop()
        got: dict[str, float] = {}
        if out.exists():
            for key, at in json.loads(out.read_text()):
                got.setdefault(key, at)
        lat = [got[k] - sent[k] for k in keys if k in got and k in sent]
        first = min(sent.values()) if sent else 0.0
        last = max(got.values()) if got else first
        res = RunResult("raw broker (subscribe only)", len(total), delivered=len(got),
                        rate_per_s=round(len(got) / (last - first), 1) if last > first else 0.0,
                        offered_rate=self.s.paced_rate, latency=latency_summary(lat))
        self.record("raw_paced", res)

    # -- contenders: flood of N distinct devices, then the paced run ---------------------------------------
    def _paced_keys(self, prefix: str) -> tuple[list[str], list[str]]:
        s = self.s
        measured = max(1, int(s.paced_rate * s.paced_s))
        return ids(f"{prefix}w", s.paced_warm), ids(f"{prefix}m", measured)

    def _flood(self, key: str, label: str, make: Callable[[str], Msg], prefix: str, pid: int,
               rss_after: bool = False) -> RunResult:
        rx = self.recorder
        s = self.s
        warm_keys = ids(f"{prefix}w", s.warm)
        warm = measure("warm-up", rx, warm_keys, lambda: self.publish([make(k) for k in warm_keys]), 60.0)
        if warm.delivered == 0:
            raise RuntimeError(f"{label} delivered nothing in the warm-up (see the logs with --keep)")
        keys = ids(f"{prefix}f", s.n)
        msgs = [make(k) for k in keys]
        with Sampler(pid, interval_s=0.1) as smp, Sampler(rx.proc.pid, interval_s=0.5) as rsmp:
            res = measure(f"{label}: {s.n} alerts from {s.n} devices", rx, keys, lambda: self.publish(msgs),
                          s.timeout_s * 3)
        res.extra.update(rss_max_mb=round(smp.rss_max, 1), cpu_pct=round(smp.cpu_pct, 1),
                         receiver_cpu_pct=round(rsmp.cpu_pct, 1))
        if any(smp.children_rss):  # the delivery process of `serve --workers 2` (and any intake processes)
            res.extra.update(delivery_rss_max_mb=round(max(smp.children_rss), 1),
                             delivery_cpu_pct=round(smp.children_cpu_pct, 1))
        if rss_after:
            time.sleep(s.after_s)
            with contextlib.suppress(OSError):
                res.extra["rss_after_mb"] = round(rss_mb(pid), 1)
        self.record(f"{key}_flood", res)
        return res

    def _paced(self, key: str, label: str, make: Callable[[str], Msg], prefix: str,
               pid: int | None = None) -> RunResult:
        s = self.s
        warm, keys = self._paced_keys(prefix)
        msgs = [make(k) for k in warm + keys]
        sampler = Sampler(pid, interval_s=0.2) if pid else contextlib.nullcontext()
        with sampler as smp:
            res = measure(f"{label}: {s.paced_rate:.0f}/s for {s.paced_s:.0f} s after {s.paced_warm} warm-up",
                          self.recorder, warm + keys, lambda: self.publish(msgs, rate=s.paced_rate),
                          s.timeout_s * 2, offered_rate=s.paced_rate, lat_keys=keys)
        if isinstance(smp, Sampler):
            res.extra.update(rss_max_mb=round(smp.rss_max, 1), cpu_pct=round(smp.cpu_pct, 1))
        self.record(f"{key}_paced", res)
        return res

    def bridge(self, store: str = "sqlite", intake: int = 0) -> None:
        s = self.s
        redis_proc: Proc | None = None
        sentinels: Any = None
        redis_url = None
        port = 0
        key = "bridge" if store == "sqlite" else "bridge_intake" if intake else f"bridge_{store}"
        label = f"bridge ({store}, {plural(intake, 'intake process')})" if intake else f"bridge ({store})"
        extra_env = {"SOSBRIDGE_INTAKE_WORKERS": str(intake)} if intake else None
        if store == "redis":
            if importlib.util.find_spec("bridge.store.redis") is None:
                self.note("bridge/store/redis.py is not there: the Redis runs are skipped")
                return
            redis_proc, port = start_redis(self.w)
            redis_url = f"redis://127.0.0.1:{port}/"
        if store == "sentinel":  # primary + 2 replicas (AOF everysec) + 3 sentinels; the replication guard on
            from tests.faults.sentinel import SentinelSet

            sentinels = SentinelSet(self.w / "sentinel")
            sentinels.start()
            port = sentinels.data_ports[0]
            redis_url = sentinels.url.removesuffix("0")
        bridge: Bridge | None = None
        try:
            empty = redis_stats(port)[0] if redis_url else 0
            bridge = self.fresh_bridge(f"{key}-flood", ids(f"{key}w", s.warm) + ids(f"{key}f", s.n),
                                       redis_url=f"{redis_url}0" if redis_url else None, extra_env=extra_env)
            seeded, _keys, commands, cpu = redis_stats(port) if redis_url else (0, 0, 0, 0.0)
            flood = self._flood(key, label, button_alert, key, bridge.proc.pid, rss_after=True)
            lag = loop_lag(bridge.url)
            if lag is not None:
                flood.extra.update(loop_lag_p99_s=lag["p99_s"], loop_lag_max_s=lag["max_s"])
            if redis_url:  # Redis memory per device and per alert kept (alert, history, delivered contact)
                alerts = flood.delivered + s.warm
                flooded, _keys, commands_after, cpu_after = redis_stats(port)
                memory = "intake_memory" if intake else f"{store}_memory"
                self.out[memory] = {
                    "devices": s.warm + s.n, "bytes_per_device": round((seeded - empty) / (s.warm + s.n)),
                    "alerts": alerts, "bytes_per_alert": round((flooded - seeded) / max(1, alerts)),
                    # every command the bridge sent while ingesting and delivering them (incl. retries)
                    "commands_per_alert": round((commands_after - commands) / max(1, alerts), 1),
                    # Redis's own CPU per alert: the alerts/s one Redis core could take from many bridges
                    "redis_cpu_us_per_alert": round((cpu_after - cpu) / max(1, alerts) * 1e6)}
                print(f"  {memory}: {json.dumps(self.out[memory])}", flush=True)
            if self.template is None:
                self.template = self.recorder.sample()
            bridge.proc.stop()
            warm, keys = self._paced_keys(key + "p")
            bridge = self.fresh_bridge(f"{key}-paced", warm + keys,
                                       redis_url=f"{redis_url}1" if redis_url else None, extra_env=extra_env)
            self._paced(key, label, button_alert, key + "p", bridge.proc.pid)
        finally:
            stop_quietly(bridge.proc if bridge else None, redis_proc)
            if sentinels is not None:
                sentinels.stop()

    def redis(self) -> None:
        self.bridge("redis")

    def sentinel(self) -> None:
        self.bridge("sentinel")

    def intake(self) -> None:
        self.bridge("redis", intake=self.s.intake_workers)

    def relay(self) -> None:
        tpl = self.contact_template()
        proc = spawn("relay", [PY, "-m", "bench.relay", str(self.broker_port), self.recorder.url, SECRET,
                               "bench/relay/+"], self.w)
        try:
            time.sleep(1.0)

            def make(k: str) -> Msg:
                return ready_contact(tpl, k, f"bench/relay/{k}")

            self._flood("relay", "thin paho relay", make, "r", proc.pid)
            self._paced("relay", "thin paho relay", make, "rp", proc.pid)
        finally:
            proc.stop()

    def nodered(self) -> None:
        missing = nodered.npm_available()
        if missing:
            self.note(f"Node-RED skipped: {missing}")
            return
        tpl = self.contact_template()
        t0 = time.monotonic()
        try:
            red_js, version = nodered.install(self.w)
        except Exception as exc:
            self.note(f"Node-RED skipped: npm install failed ({exc!r:.200})")
            return
        self.out["nodered_version"] = version
        print(f"  node-red {version} installed in {time.monotonic() - t0:.1f} s", flush=True)
        proc, admin = nodered.start(red_js, self.w, SECRET)
        try:
            nodered.deploy(admin, self.broker_port, "bench/nodered/+", self.recorder.url)
            time.sleep(1.5)  # the mqtt-in node connects and subscribes after the deploy returns

            def make(k: str) -> Msg:
                return ready_contact(tpl, k, f"bench/nodered/{k}")

            self._flood("nodered", f"Node-RED {version}", make, "n", proc.pid)
            self._paced("nodered", f"Node-RED {version}", make, "np", proc.pid)
        finally:
            proc.stop()

    # -- the storm -----------------------------------------------------------------------------------------
    def storm(self) -> None:
        s = self.s
        rx = self.recorder
        keys = ids("s", s.storm_devices)
        probe = "probe00001"
        bridge = self.fresh_bridge("storm", [*keys, probe])
        rng = random.Random(9)
        msgs = [button_alert(k) for k in keys]
        msgs += [msgs[rng.randrange(len(keys))] for _ in range(s.storm_dups)]
        rng.shuffle(msgs)
        rate = len(msgs) / s.storm_window_s
        probe_pub = Publisher(self.broker_port)
        probe_sent: dict[str, float] = {}
        window: dict[str, Any] = {}

        def fire_probe() -> None:
            probe_sent[probe] = time.time()
            # What the broker had taken of the storm when the probe went: the storm's publisher queues what
            # the broker has not acknowledged yet, so on a loaded machine the probe can overtake those frames.
            storm_pub = window.get("pub")
            window["acked_at_probe"] = storm_pub.acked if storm_pub is not None else None
            probe_pub.client.publish(f"sosbridge/{TENANT}/{probe}/alert", button_alert(probe).payload, qos=1)
            text = metrics_text(bridge.url)  # one read of /metrics for both figures
            if text is not None:
                window["bridge_at_probe"] = stored_and_delivered(text)
                # How far behind the platform was (refreshed every second by the bridge's health loop).
                window["oldest_waiting_at_probe_s"] = gauge(text, "sosbridge_outbox_oldest_age_seconds")

        def send() -> dict[str, float]:
            pub = Publisher(self.broker_port, inflight=1000)
            window["pub"] = pub
            try:
                t0 = time.monotonic()
                sent = pub.send(msgs, rate=rate, deadline_s=s.storm_window_s * 3,
                                at={s.storm_window_s / 2: fire_probe})
                window["publish_s"] = round(time.monotonic() - t0, 2)
                if not pub.wait_acked(len(msgs), timeout_s=s.timeout_s):
                    # The load generator's own client lost frames before the broker took them (its network
                    # thread starved on a loaded machine): a device never published is not the bridge's loss.
                    self.note(f"storm: the broker acknowledged {pub.acked:,} of {len(msgs):,} publishes in "
                              f"{s.timeout_s:.0f} s; a missing device may never have reached the broker")
                window["publisher_acked"] = pub.acked
                window["acked_keys"] = pub.acked_keys()
                sent.update(probe_sent)
                window["sent"] = set(sent)
                return sent
            finally:
                pub.close()

        try:
            with Sampler(bridge.proc.pid, interval_s=0.2) as smp:
                res = measure(f"storm: {s.storm_devices} devices + {s.storm_dups} duplicates", rx,
                              [*keys, probe], send, s.timeout_s * 3, settle_s=1.0)
            published = window.get("sent", set())
            # Lost: a device the broker acknowledged a frame of and the platform never heard. A device whose
            # every frame the load generator lost before the broker took it is not the bridge's loss.
            at_broker = window.get("acked_keys", published)
            counts = [res.per_key.get(k, 0) for k in keys if k in published and k in at_broker]
            if len(counts) < len(keys):
                self.note(f"storm: {len(keys) - len(counts)} devices never published or never acknowledged by "
                          "the broker are not counted as lost")
            res.extra.update(
                published=len(msgs) + 1,
                publisher_acked=window.get("publisher_acked"),
                publish_window_s=window.get("publish_s"),
                delivered_once=sum(1 for c in counts if c == 1),
                delivered_twice_or_more=sum(1 for c in counts if c > 1),
                lost=sum(1 for c in counts if c == 0) + (0 if probe in res.per_key else 1),
                probe_delivered=probe in res.per_key,
                rss_max_mb=round(smp.rss_max, 1),
                cpu_pct=round(smp.cpu_pct, 1),
                time_to_last_delivery_s=res.elapsed_s,
            )
            rows = rx.rows()
            # "0 extra": the duplicates carry the message id of a press already received, so the platform
            # must see no escalation update for any storm device (issue 27 item 3).
            keyset = set(keys)
            res.extra["escalation_updates"] = sum(1 for r in rows if r[0] in keyset and r[-1] == "update")
            # The first alerts the broker had before the probe (it acknowledges a client's frames in order):
            # every one is a device's first SOS of equal rank, and the bridge serves them in order.
            taken = window.get("acked_at_probe")
            if taken is not None:
                res.extra["frames_at_broker_before_probe"] = taken
                res.extra["first_alerts_ahead_of_probe"] = len({m.key for m in msgs[:taken]})
            # Where those waited: not yet stored (at the broker or being read), or stored and waiting in the
            # outbox (the probe's own first contact may then be handed to delivery ahead of them).
            at_probe = window.get("bridge_at_probe")
            if at_probe is not None:
                res.extra["stored_before_probe"], res.extra["delivered_before_probe"] = at_probe
            res.extra["oldest_waiting_at_probe_s"] = window.get("oldest_waiting_at_probe_s")
            lag = loop_lag(bridge.url)  # the event loop's rounds: every step of every alert waited this long
            if lag is not None:
                res.extra.update(loop_lag_p99_s=lag["p99_s"], loop_lag_max_s=lag["max_s"])
            probe_rows = [r for r in rows if r[0] == probe and r[-1] in ("alert", None)]
            if probe_rows and probe in probe_sent:
                res.extra["probe_latency_s"] = round(probe_rows[0][1] - probe_sent[probe], 3)
            self.record("storm", res)
        finally:
            probe_pub.close()
            bridge.proc.stop()

    # -- fairness: device A floods, device B's SOS latency ---------------------------------------------------
    def fairness(self) -> None:
        """B is a stream of first SOS presses, one every fair_b_every_s, each from a new registered device (so
        every one is a new life-safety alert, never folded into an open one); A is one device flooding SOS
        presses with new message ids and location updates, in its own process: first paced at fair_a_rate
        frames/s (the issue's "A at 3,000 frames/s": B's p99 within 2x alone), then as fast as it can ("A flat
        out": B's p99 within 1 s, all of B delivered)."""
        s = self.s
        nb = max(2, int(s.fair_s / s.fair_b_every_s))
        a = "flooder0001"
        warm, alone, paced, flooded = ids("bw", s.warm), ids("ba", nb), ids("bp", nb), ids("bf", nb)
        bridge = self.fresh_bridge("fairness", [a, *warm, *alone, *paced, *flooded])
        try:
            measure("warm-up", self.recorder, warm, lambda: self.publish([button_alert(k) for k in warm]), 60.0)
            with Sampler(bridge.proc.pid, interval_s=0.2) as smp:
                res_alone = measure(f"B alone: an SOS every {s.fair_b_every_s * 1000:.0f} ms", self.recorder, alone,
                                    lambda: self.publish([button_alert(k) for k in alone],
                                                         rate=1 / s.fair_b_every_s),
                                    s.timeout_s, offered_rate=1 / s.fair_b_every_s)
                self.record("fairness_alone", res_alone)
                phases = [("fairness_flooded", flooded, 0.0)]
                if s.fair_a_rate > 0:
                    phases.insert(0, ("fairness_paced", paced, s.fair_a_rate))
                for key, keys, a_rate in phases:
                    res = self._b_while_a_floods(a, keys, a_rate, res_alone)
                    res.extra["rss_max_mb"] = round(smp.rss_max, 1)
                    self.record(key, res)
        finally:
            stop_quietly(bridge.proc)

    def _b_while_a_floods(self, a: str, keys: list[str], a_rate: float, res_alone: RunResult) -> RunResult:
        """One phase: A floods (paced at `a_rate` frames/s, or flat out at 0) while B's devices press."""
        s = self.s
        rx = self.recorder
        lead_in = min(1.0, s.fair_s / 10)  # A is flooding before B's first press and after B's last
        how = f"at {a_rate:,.0f} frames/s" if a_rate else "flat out"
        rx.reset()
        flooder = spawn("flooder", [PY, "-m", "bench.flooder", str(self.broker_port), TENANT, a,
                                    str(s.fair_s + 2 * lead_in), str(s.fair_a_max), "1000", str(a_rate)], self.w)
        try:
            time.sleep(lead_in)
            res = measure(f"B while A floods {how}: an SOS every {s.fair_b_every_s * 1000:.0f} ms", rx, keys,
                          lambda: self.publish([button_alert(k) for k in keys], rate=1 / s.fair_b_every_s),
                          s.timeout_s * 2, offered_rate=1 / s.fair_b_every_s, reset=False)
            flooder.proc.wait(timeout=s.fair_s + 2 * lead_in + 30)
        finally:
            stop_quietly(flooder)
        a_stats: dict[str, Any] = {}
        with contextlib.suppress(ValueError, IndexError, OSError):
            a_stats = json.loads(flooder.log.read_text().strip().splitlines()[-1])
        res.extra.update(a_paced_at=a_rate or None, a_frames=a_stats.get("sent"),
                         a_rate_per_s=a_stats.get("rate_per_s"), a_contacts=sum(1 for r in rx.rows() if r[0] == a))
        p_alone, p_flood = res_alone.latency.get("p99_ms"), res.latency.get("p99_ms")
        if p_alone and p_flood and p_alone == p_alone and p_flood == p_flood:
            res.extra["p99_ratio"] = round(p_flood / p_alone, 2)
        return res

    # -- resources at rest, the HTTP ingress -------------------------------------------------------------------
    def rest(self) -> None:
        env = bridge_env(self.w, "rest", self.recorder.url, self.broker_port)
        from bridge.app.config import Settings

        seed_sync(Settings(db=env["SOSBRIDGE_DB"]), ids("rest", self.s.rest_devices))
        starts: list[float] = []
        result: dict[str, Any] = {"devices": self.s.rest_devices}
        for i in range(self.s.rest_tries):
            bridge = start_bridge(self.w, "rest", env)
            try:
                starts.append(round(bridge.ready_s, 3))
                if i == self.s.rest_tries - 1:
                    time.sleep(min(2.0, self.s.rest_s))
                    c0, t0 = cpu_s(bridge.proc.pid), time.monotonic()
                    time.sleep(self.s.rest_s)
                    result["rest_cpu_pct"] = round(100 * (cpu_s(bridge.proc.pid) - c0) / (time.monotonic() - t0), 2)
                    result["rest_rss_mb"] = round(rss_mb(bridge.proc.pid), 1)
            finally:
                bridge.proc.stop()
        result["cold_start_s"] = starts
        result["cold_start_median_s"] = sorted(starts)[len(starts) // 2]
        self.record("rest", result)

    def http(self) -> None:
        """`POST /v1/alerts`, one alert per device, 16 requests in flight: the answers (2xx only once the
        alert is committed) and the deliveries to the recording receiver."""
        s = self.s
        keys = ids("ht", s.http_n)
        # Only the HTTP ingress: no CoAP listener (its fixed port may be another process's on a shared box).
        bridge = self.fresh_bridge("http", [], http_ids=keys, extra_env={"SOSBRIDGE_COAP_ENABLED": "false"})
        runs: list[HttpRun] = []
        load_before = os.getloadavg()[0]  # other work on the box (the ratio of two runs needs the same)

        def go() -> dict[str, float]:
            t0 = time.monotonic()
            run = http_send(bridge.url, keys, concurrency=16, deadline_s=s.timeout_s)
            run.elapsed_s = time.monotonic() - t0
            runs.append(run)
            return run.sent

        try:
            cpu0 = cpu_s(bridge.proc.pid)
            with Sampler(bridge.proc.pid) as smp:
                res = measure(f"bridge HTTP: {s.http_n} alerts, 16 concurrent", self.recorder, keys, go, s.timeout_s)
            cpu_used = cpu_s(bridge.proc.pid) - cpu0  # ingest and delivery: less sensitive to a busy box
            run = runs[0]
            ok = sum(n for code, n in run.statuses.items() if 200 <= code < 300)
            answers = latency_summary([ms / 1000 for ms in run.answer_ms])
            res.extra.update(rss_max_mb=round(smp.rss_max, 1), cpu_pct=round(smp.cpu_pct, 1),
                             statuses=dict(run.statuses), accepted_per_s=round(ok / run.elapsed_s, 1),
                             answer_p50_ms=answers["p50_ms"], answer_p99_ms=answers["p99_ms"],
                             answer_max_ms=answers["max_ms"], load_1m_before=load_before,
                             cpu_ms_per_alert=round(1000 * cpu_used / max(1, res.delivered), 3))
            self.record("http_flood", res)
        finally:
            bridge.proc.stop()


# -- report ---------------------------------------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _a_phase(extra: dict[str, Any]) -> str:
    """How A flooded in one fairness phase, as the summary's row label."""
    paced = extra.get("a_paced_at")
    how = f"paced at {paced:,.0f}/s" if paced else "flat out"
    return (f"B while A floods {how} ({extra.get('a_frames') or 0:,} frames, {extra.get('a_rate_per_s') or 0:,.0f}/s, "
            f"{extra.get('a_contacts')} contacts for A)")


def _met(ok: bool | None) -> str:
    return "not run" if ok is None else ("met" if ok else "missed")


def plural(n: int, what: str) -> str:
    """"1 intake process", "2 intake processes"."""
    return f"{n} {what}" if n == 1 else f"{n} {what}es" if what.endswith("s") else f"{n} {what}s"


def report(out: dict[str, Any]) -> str:
    runs = out["runs"]
    s = out["sizes"]
    parts: list[str] = []
    m = out["machine"]
    parts.append(f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['mem_gb']} GB RAM, Python {m['python']}, "
                 f"SQLite {m['sqlite']}; broker, receiver, load generator and contender share the cores."
                 + (" SMOKE SIZES: the numbers below only show the bench works." if out.get("smoke") else "")
                 + (f" Storm, fairness and HTTP ran on {out['scaled']}." if out.get("scaled") else ""))
    nr = f"Node-RED {out.get('nodered_version', '')}".strip()
    contenders = [("bridge (SQLite, durable)", "bridge"), ("bridge (Redis)", "bridge_redis"),
                  (f"bridge (Redis, {plural(s.get('intake_workers', 1), 'intake process')})", "bridge_intake"),
                  ("thin paho relay", "relay"), (nr, "nodered")]

    v = runs.get("validate")
    if v:
        e = v["extra"]
        parts.append("### Validation (bridge → reference receiver, signature and schema checked)\n\n" + table(
            ["alerts", "delivered", "records", "valid", "invalid", "refused", "alerts/s (validation-capped)"],
            [[v["expected"], v["delivered"], e.get("records"), e.get("valid"), e.get("invalid"), e.get("rejected"),
              v["rate_per_s"]]]))
    c = runs.get("ceiling")
    fastest = max([runs.get(f"{k}_flood", {}).get("rate_per_s") or 0.0 for _, k in contenders] or [0.0])
    if c:
        parts.append("### Recording receiver ceiling (POSTed at directly)\n\n" + table(
            ["POSTs", "received", "connections", "body bytes", "POSTs/s", "receiver busy % of a core",
             "POSTs/s at 100 % (estimate)", "fastest contender / POSTs/s"],
            [[c["expected"], c["delivered"], c["conns"], c["body_bytes"], c["rate_per_s"], c["receiver_busy_pct"],
              c["ceiling_estimate_per_s"], _ratio(fastest, c["rate_per_s"])]]))

    base = runs.get("bridge_flood", {}).get("rate_per_s") or 0.0
    rows = []
    for label, key in contenders:
        tp = runs.get(f"{key}_flood")
        if not tp:
            continue
        e, lt = tp.get("extra", {}), tp.get("latency", {})
        # The main process's CPU, and its child processes' (delivery, intake) after a "+".
        cpu = e.get("cpu_pct") if e.get("delivery_cpu_pct") is None else f"{e.get('cpu_pct')} + {e['delivery_cpu_pct']}"
        rows.append([label, tp["rate_per_s"], f"{_ratio(base, tp['rate_per_s'])}x" if base else None,
                     f"{tp['delivered']}/{tp['expected']}", lt.get("p50_ms"), lt.get("p99_ms"), cpu,
                     e.get("rss_max_mb"), e.get("receiver_cpu_pct")])
    raw = runs.get("raw_flood")
    if raw:
        rows.append(["raw broker: mosquitto_pub → mosquitto_sub", raw["rate_per_s"],
                     f"{_ratio(base, raw['rate_per_s'])}x" if base else None,
                     f"{raw['delivered']}/{raw['expected']}", None, None, None, None, None])
    if rows:
        parts.append(f"### Flood: {s['n']:,} alerts from {s['n']:,} distinct devices, as fast as published\n\n"
                     + table(["contender", "alerts/s", "bridge / this", "delivered", "p50 ms", "p99 ms",
                              "CPU % (+ children)",
                              "RSS max MB", "receiver CPU %"], rows))
    rows = []
    for label, key in [*contenders, ("raw broker (subscribe only)", "raw")]:
        p = runs.get(f"{key}_paced")
        if not p:
            continue
        lt = p.get("latency", {})
        rows.append([label, p["offered_rate"], f"{p['delivered']}/{p['expected']}", p["rate_per_s"],
                     lt.get("p50_ms"), lt.get("p95_ms"), lt.get("p99_ms"), lt.get("max_ms")])
    if rows:
        parts.append(f"### Paced: {s['paced_rate']:.0f} alerts/s for {s['paced_s']:.0f} s after a "
                     f"{s['paced_warm']:,}-alert warm-up (latency over the paced part)\n\n"
                     + table(["contender", "offered /s", "delivered", "alerts/s", "p50 ms", "p95 ms", "p99 ms",
                              "max ms"], rows))
    st = runs.get("storm")
    if st:
        e = st["extra"]
        parts.append(f"### Storm: {s['storm_devices']:,} devices + {s['storm_dups']:,} duplicate presses, a new "
                     "device's SOS in the middle\n\n" + table(
                         ["messages", "publish window s", "delivered once", "more than once", "lost",
                          "escalation updates", "probe SOS latency s",
                          "first alerts ahead of the probe: sent / stored / delivered",
                          "oldest contact waiting when the probe went s", "time to last delivery s",
                          "RSS max MB", "loop lag p99 / max s"],
                         [[e.get("published"), e.get("publish_window_s"), e.get("delivered_once"),
                           e.get("delivered_twice_or_more"), e.get("lost"), e.get("escalation_updates"),
                           e.get("probe_latency_s"),
                           f"{e.get('first_alerts_ahead_of_probe')} / {e.get('stored_before_probe')} / "
                           f"{e.get('delivered_before_probe')}",
                           e.get("oldest_waiting_at_probe_s"), e.get("time_to_last_delivery_s"), e.get("rss_max_mb"),
                           f"≤ {e.get('loop_lag_p99_s')} / ≤ {e.get('loop_lag_max_s')}"]]))
    fa = runs.get("fairness_alone")
    floods = [(key, runs[key]) for key in ("fairness_paced", "fairness_flooded") if key in runs]
    if fa and floods:
        frows = []
        for label, r in [("B alone", fa), *((_a_phase(r["extra"]), r) for _, r in floods)]:
            lt = r.get("latency", {})
            frows.append([label, f"{r['delivered']}/{r['expected']}", lt.get("p50_ms"), lt.get("p99_ms"),
                          lt.get("max_ms"), r["extra"].get("p99_ratio")])
        parts.append(f"### Fairness: B sends an SOS every {s['fair_b_every_s'] * 1000:.0f} ms for {s['fair_s']:.0f} s; "
                     "A floods SOS presses and locations\n\n"
                     + table(["B", "delivered", "p50 ms", "p99 ms", "max ms", "p99 / alone"], frows))
    h = runs.get("http_flood")
    if h:
        e, lt = h["extra"], h.get("latency", {})
        parts.append(f"### HTTP ingress: {h['expected']:,} `POST /v1/alerts` from distinct devices, 16 in flight "
                     f"(load average {e.get('load_1m_before')} before)\n\n" + table(
                         ["2xx answers/s", "answer p50 ms", "answer p99 ms", "statuses", "delivered",
                          "delivered/s", "delivery p99 ms", "bridge CPU %", "bridge CPU ms/alert"],
                         [[e.get("accepted_per_s"), e.get("answer_p50_ms"), e.get("answer_p99_ms"),
                           e.get("statuses"), f"{h['delivered']}/{h['expected']}", h["rate_per_s"],
                           lt.get("p99_ms"), e.get("cpu_pct"), e.get("cpu_ms_per_alert")]]))
    res_rows = []
    bf = runs.get("bridge_flood")
    if bf:
        res_rows += [[f"bridge RSS during / after the {bf['expected']:,} flood (MB)",
                      f"{bf['extra'].get('rss_max_mb')} / {bf['extra'].get('rss_after_mb')}"],
                     ["bridge CPU during the flood (% of one core)", bf["extra"].get("cpu_pct")]]
        if "loop_lag_max_s" in bf["extra"]:
            res_rows += [["bridge event-loop lag, p99 / max (s, bucket bounds)",
                          f"≤ {bf['extra']['loop_lag_p99_s']} / ≤ {bf['extra']['loop_lag_max_s']}"]]
        if "delivery_rss_max_mb" in bf["extra"]:
            res_rows += [["delivery process RSS / CPU during the flood (MB / % of one core)",
                          f"{bf['extra']['delivery_rss_max_mb']} / {bf['extra'].get('delivery_cpu_pct')}"]]
    rest = runs.get("rest")
    if rest:
        res_rows += [[f"RSS at rest, {rest['devices']:,} devices (MB)", rest.get("rest_rss_mb")],
                     ["CPU at rest (%)", rest.get("rest_cpu_pct")],
                     ["cold start → /readyz 200 (s, median)", rest.get("cold_start_median_s")]]
    for name, secs in (out.get("seeding_s") or {}).items():
        if name.endswith("flood") or name == "storm":
            res_rows.append([f"seeding ({name}) s", secs])
    if res_rows:
        parts.append("### Resources\n\n" + table(["bridge", "value"], res_rows))
    parts.append("### Targets (issue 27), ratios from this run\n\n" + table(
        ["target", "value", "result"], targets(out)))
    return "\n\n".join(parts)


def targets(out: dict[str, Any]) -> list[list[Any]]:
    runs = out["runs"]
    bridge = runs.get("bridge_flood", {}).get("rate_per_s")
    relay = runs.get("relay_flood", {}).get("rate_per_s")
    red = runs.get("nodered_flood", {}).get("rate_per_s")
    r_relay, r_red = _ratio(bridge, relay), _ratio(bridge, red)
    rows: list[list[Any]] = [
        [f"bridge ≥ {TARGET_VS_RELAY}x thin relay (alerts/s)", f"{r_relay}x" if r_relay else None,
         _met(None if r_relay is None else r_relay >= TARGET_VS_RELAY)],
        [f"bridge ≥ {TARGET_VS_NODERED}x Node-RED (alerts/s)", f"{r_red}x" if r_red else None,
         _met(None if r_red is None else r_red >= TARGET_VS_NODERED)],
    ]
    p = runs.get("bridge_paced")
    p99 = p.get("latency", {}).get("p99_ms") if p else None
    all_in = bool(p) and p["delivered"] == p["expected"]
    rate = out["sizes"]["paced_rate"]
    rows.append([f"bridge p99 ≤ {TARGET_P99_MS:.0f} ms at {rate:.0f} alerts/s (stretch 2 ms)",
                 None if p is None else f"{p99} ms, {p['delivered']}/{p['expected']}",
                 _met(None if p is None else bool(p99 is not None and p99 == p99 and p99 <= TARGET_P99_MS and all_in))])
    st = runs.get("storm")
    if st:
        e = st["extra"]
        lat = e.get("probe_latency_s")
        ok = (lat is not None and lat <= TARGET_PROBE_S and e.get("lost") == 0
              and e.get("escalation_updates") == 0 and e.get("delivered_twice_or_more") == 0)
        rows.append([f"storm probe SOS ≤ {TARGET_PROBE_S:.0f} s (stretch 0.1 s), 0 lost, 0 extra",
                     f"{lat} s, {e.get('lost')} lost, {e.get('escalation_updates')} escalation updates",
                     _met(ok)])
    else:
        rows.append([f"storm probe SOS ≤ {TARGET_PROBE_S:.0f} s, 0 lost, 0 extra", None, _met(None)])
    fp, ff = runs.get("fairness_paced"), runs.get("fairness_flooded")
    ratio = fp["extra"].get("p99_ratio") if fp else None
    rows.append([f"fairness: A at {out['sizes']['fair_a_rate']:,.0f} frames/s: B's p99 ≤ {TARGET_FAIRNESS:.0f}x alone",
                 f"{ratio}x, {fp['delivered']}/{fp['expected']}" if fp else None,
                 _met(None if fp is None else bool(ratio is not None and ratio <= TARGET_FAIRNESS
                                                   and fp["delivered"] == fp["expected"]))])
    p99 = ff.get("latency", {}).get("p99_ms") if ff else None
    rows.append([f"fairness: A flat out: B's p99 ≤ {TARGET_FLAT_OUT_S:.0f} s, all of B delivered",
                 f"{p99} ms, {ff['delivered']}/{ff['expected']}" if ff else None,
                 _met(None if ff is None else bool(p99 is not None and p99 == p99
                                                   and p99 <= 1000 * TARGET_FLAT_OUT_S
                                                   and ff["delivered"] == ff["expected"]))])
    bf = runs.get("bridge_flood")
    if bf:
        during, after = bf["extra"].get("rss_max_mb"), bf["extra"].get("rss_after_mb")
        ok = during is not None and after is not None and max(during, after) <= TARGET_RSS_MB
        rows.append([f"bridge RSS ≤ {TARGET_RSS_MB:.0f} MB during and after the flood", f"{during} / {after} MB",
                     _met(ok)])
    else:
        rows.append([f"bridge RSS ≤ {TARGET_RSS_MB:.0f} MB during and after the flood", None, _met(None)])
    h = runs.get("http_flood")
    he = h["extra"] if h else {}
    rate, p99 = he.get("accepted_per_s"), he.get("answer_p99_ms")
    rows.append([f"HTTP ingress ≥ {TARGET_HTTP_RATE:,.0f} answers/s, answer p99 ≤ {TARGET_HTTP_P99_MS:.0f} ms, "
                 "all delivered", None if h is None else f"{rate}/s, p99 {p99} ms, {h['delivered']}/{h['expected']}",
                 _met(None if h is None else bool(rate and p99 is not None and rate >= TARGET_HTTP_RATE
                                                  and p99 <= TARGET_HTTP_P99_MS and h["delivered"] == h["expected"]))])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a tiny run that only checks the bench works")
    ap.add_argument("--no-nodered", action="store_true")
    ap.add_argument("--only", nargs="*", default=None, choices=[*ALL_STEPS, *ALIASES], metavar="STEP",
                    help=f"any of {' '.join(ALL_STEPS)} (default: {' '.join(DEFAULT_STEPS)})")
    ap.add_argument("--n", type=int, default=None, help="flood size (default 20,000; smoke 300)")
    ap.add_argument("--fair-a-rate", type=float, default=None,
                    help="the fairness run's paced phase: device A floods at this many frames/s (default 3,000; "
                         "0 skips it); a flat-out phase follows")
    ap.add_argument("--intake-workers", type=int, default=None,
                    help="the intake step's intake processes (default 1: on 2 cores the main process, one "
                         "intake process and the delivery process share them)")
    ap.add_argument("--intake-on-redis", action="store_true",
                    help="the storm, fairness and http steps run the bridge on Redis with --intake-workers intake "
                         "processes (the summary's targets then judge that configuration for those steps)")
    ap.add_argument("--broker-inflight", type=int, default=1000,
                    help="mosquitto max_inflight_messages per subscriber (default 1000, as the shipped "
                         "hardware/mosquitto/mosquitto.conf; Mosquitto's own default is 20)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = ap.parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes()
    if args.n:
        sizes = dataclasses.replace(sizes, n=args.n)
    if args.fair_a_rate is not None:
        sizes = dataclasses.replace(sizes, fair_a_rate=args.fair_a_rate)
    if args.intake_workers is not None:
        sizes = dataclasses.replace(sizes, intake_workers=args.intake_workers)
    want = {ALIASES.get(step, step) for step in (args.only or DEFAULT_STEPS)}
    if args.no_nodered or (args.smoke and args.only is None):
        want.discard("nodered")
    if args.smoke and args.only is None:
        want |= {"redis", "intake"}  # so the bench's Redis and intake-process steps are exercised in CI too
    workdir = Path(tempfile.mkdtemp(prefix="sosbridge-bench-"))
    started = time.time()
    failed = False
    with Bench(sizes, workdir, args) as bench:
        for name in ALL_STEPS:
            if name not in want:
                continue
            print(f"== {name}", flush=True)
            try:
                getattr(bench, name)()
            except Exception as exc:
                failed = True
                bench.note(f"{name} failed: {exc!r:.300}")
        out = bench.out
    out["smoke"] = args.smoke
    out["started"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))
    out["duration_s"] = round(time.time() - started, 1)
    text = report(out)
    print("\n" + text + "\n")
    for n in out["notes"]:
        print(f"- {n}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = ("smoke-" if args.smoke else "") + time.strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / f"{name}.json", RESULTS / ("smoke-latest.json" if args.smoke else "latest.json")):
        path.write_text(json.dumps(out, indent=2, default=str))
    print(f"results: bench/results/{name}.json ({out['duration_s']} s)")
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
