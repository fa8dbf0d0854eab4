"""`python -m bench.run [--smoke] [--no-nodered] [--no-redis] [--only ...]`: the whole benchmark.

Prints Markdown tables and writes bench/results/<timestamp>.json (and latest.json). Every load loop is
bounded in count and time; everything listens on 127.0.0.1 only; every process is stopped by its pid.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
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
    machine,
    rss_mb,
    spawn,
    start_mosquitto,
    start_redis,
    table,
    which,
)
from bench.harness import SECRET, Bridge, ReceiverClient, RunResult, bridge_env, measure, start_bridge, stop_quietly
from bench.load import Msg, Publisher, button_alert, http_send, ready_contact
from bench.seed import seed_sync

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Sizes:
    warm: int = 50
    mqtt_n: int = 3000
    lat_n: int = 2000  # at most; a latency run lasts about lat_s seconds
    lat_s: float = 6.0
    http_n: int = 2000
    rest_devices: int = 10_000
    flood_n: int = 20_000
    storm_devices: int = 10_000
    storm_dups: int = 100_000
    storm_window_s: float = 10.0
    timeout_s: float = 300.0


SMOKE = Sizes(warm=10, mqtt_n=200, lat_n=100, lat_s=1.0, http_n=100, rest_devices=300, flood_n=300,
              storm_devices=100, storm_dups=600, storm_window_s=1.0, timeout_s=20.0)


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


class Bench:
    def __init__(self, sizes: Sizes, workdir: Path, args: argparse.Namespace) -> None:
        self.s = sizes
        self.w = workdir
        self.args = args
        self.out: dict[str, Any] = {"machine": machine(), "sizes": sizes.__dict__, "runs": {}, "notes": []}
        self.broker: Proc | None = None
        self.broker_port = 0
        self.rx: ReceiverClient | None = None
        self.template: dict[str, Any] | None = None

    # -- infrastructure ----------------------------------------------------------------------------------
    def __enter__(self) -> Bench:
        self.broker, self.broker_port = start_mosquitto(self.w)
        self.rx = ReceiverClient(self.w)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rx is not None:
            self.rx.close()
        stop_quietly(self.broker)

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.out["notes"].append(text)

    def record(self, key: str, result: RunResult | dict[str, Any]) -> None:
        data = result.as_dict() if isinstance(result, RunResult) else result
        self.out["runs"][key] = data
        print(f"  {key}: {json.dumps({k: v for k, v in data.items() if k != 'extra'}, default=str)[:400]}",
              flush=True)

    def publish(self, msgs: list[Msg], rate: float | None = None, inflight: int = 100) -> dict[str, float]:
        pub = Publisher(self.broker_port, inflight=inflight)
        try:
            sent = pub.send(msgs, rate=rate, deadline_s=self.s.timeout_s)
            pub.wait_acked(len(msgs), timeout_s=self.s.timeout_s)
            return sent
        finally:
            pub.close()

    # -- raw broker ----------------------------------------------------------------------------------------
    def raw_broker(self) -> None:
        pub_bin, sub_bin = which("mosquitto_pub"), which("mosquitto_sub")
        if not pub_bin or not sub_bin:
            self.note("mosquitto-clients missing: raw broker rate skipped")
            return
        n = self.s.mqtt_n * 3
        lines = self.w / "raw.txt"
        lines.write_text("".join(f'{{"kind":"sos","message_id":"raw-{i}"}}\n' for i in range(n)))
        port = str(self.broker_port)
        sub = subprocess.Popen([sub_bin, "-h", "127.0.0.1", "-p", port, "-t", "bench/raw", "-q", "1", "-C", str(n)],
                               stdout=subprocess.DEVNULL)
        time.sleep(0.5)  # let the subscription land before the first publish
        t0 = time.monotonic()
        with open(lines, "rb") as fh:
            subprocess.run([pub_bin, "-h", "127.0.0.1", "-p", port, "-t", "bench/raw", "-q", "1", "-l"],
                           stdin=fh, check=True, timeout=self.s.timeout_s)
        try:
            sub.wait(self.s.timeout_s)
            elapsed = time.monotonic() - t0
            self.record("raw_broker", {"label": "mosquitto_pub → mosquitto_sub (QoS 1)", "expected": n,
                                       "delivered": n, "rate_per_s": round(n / elapsed, 1),
                                       "elapsed_s": round(elapsed, 3)})
        except subprocess.TimeoutExpired:
            sub.kill()
            self.note("mosquitto_sub did not receive every raw message in time")

    # -- contenders over MQTT ------------------------------------------------------------------------------
    def _mqtt_pair(self, key: str, label: str, make: Any, prefix: str, sampler_pid: int | None = None) -> float:
        """Throughput (as fast as possible), then latency at half the measured rate. Returns the rate."""
        assert self.rx is not None
        s = self.s
        keys = ids(f"{prefix}t", s.mqtt_n)
        msgs = [make(k) for k in keys]
        sampler = Sampler(sampler_pid) if sampler_pid else contextlib.nullcontext()
        with sampler as smp:
            tp = measure(f"{label}: sustained", self.rx, keys, lambda: self.publish(msgs), s.timeout_s)
        if isinstance(smp, Sampler):
            tp.extra.update(rss_max_mb=round(smp.rss_max, 1), cpu_pct=round(smp.cpu_pct, 1))
        self.record(f"{key}_throughput", tp)
        if tp.rate_per_s <= 0:
            return 0.0
        half = max(1.0, tp.rate_per_s / 2)
        self._mqtt_latency(key, label, make, prefix + "h", half)
        return tp.rate_per_s

    def _mqtt_latency(self, key: str, label: str, make: Any, prefix: str, rate: float, tag: str = "half") -> None:
        assert self.rx is not None
        n = max(20, min(self.s.lat_n, int(rate * self.s.lat_s)))
        keys = ids(prefix, n)
        msgs = [make(k) for k in keys]
        res = measure(f"{label}: latency at {rate:.0f}/s", self.rx, keys,
                      lambda: self.publish(msgs, rate=rate), self.s.timeout_s, offered_rate=round(rate, 1))
        self.record(f"{key}_latency_{tag}", res)

    def bridge_contenders(self, store: str) -> None:
        """The bridge over MQTT and HTTP with one store; keeps a finished contact as the relays' payload."""
        assert self.rx is not None
        s = self.s
        redis_proc: Proc | None = None
        redis_url = None
        if store == "redis":
            if importlib.util.find_spec("bridge.store.redis") is None:
                self.note("bridge/store/redis.py is not there yet: the Redis runs are skipped")
                return
            redis_proc, port = start_redis(self.w)
            redis_url = f"redis://127.0.0.1:{port}/0"
        env = bridge_env(self.w, f"main-{store}", self.rx.url, self.broker_port, redis_url)
        from bridge.config import Settings

        settings = Settings(db=env["SOSBRIDGE_DB"], redis_url=redis_url)
        mqtt_ids = ids("w", s.warm) + ids("mt", s.mqtt_n) + ids("mh", s.lat_n) + ids("m5", s.lat_n)
        t0 = time.monotonic()
        seed_sync(settings, mqtt_ids, ids("ht", s.http_n) + ids("hh", s.lat_n))
        print(f"[{store}] seeded {len(mqtt_ids) + s.http_n + s.lat_n} devices in {time.monotonic() - t0:.1f} s",
              flush=True)
        bridge: Bridge | None = None
        try:
            bridge = start_bridge(self.w, f"main-{store}", env)
            warm = measure("warm-up", self.rx, ids("w", s.warm),
                           lambda: self.publish([button_alert(k) for k in ids("w", s.warm)]), 60.0)
            if warm.delivered == 0:
                raise RuntimeError(f"bridge ({store}) delivered nothing in the warm-up; see {bridge.proc.log}")
            if self.template is None:
                records = [r for r in self.rx.full_records() if r.get("contact")]
                self.template = records[0]["contact"]
            rate = self._mqtt_pair(f"bridge_{store}_mqtt", f"bridge ({store}) MQTT", button_alert, "m",
                                   sampler_pid=bridge.proc.pid)
            if rate >= 600:
                self._mqtt_latency(f"bridge_{store}_mqtt", f"bridge ({store}) MQTT", button_alert, "m5", 500.0,
                                   tag="500")
            else:
                self.note(f"bridge ({store}) sustains {rate:.0f}/s < 600/s: the 500/s latency run is skipped")
            self._http(store, bridge)
        finally:
            stop_quietly(bridge.proc if bridge else None, redis_proc)

    def _http(self, store: str, bridge: Bridge) -> None:
        assert self.rx is not None
        s = self.s
        keys = ids("ht", s.http_n)
        statuses: dict[int, int] = {}

        def go(k: list[str], rate: float | None) -> dict[str, float]:
            sent, st = http_send(bridge.url, k, rate=rate, concurrency=16, deadline_s=s.timeout_s)
            for code, n in st.items():
                statuses[code] = statuses.get(code, 0) + n
            return sent

        with Sampler(bridge.proc.pid) as smp:
            tp = measure(f"bridge ({store}) HTTP: sustained", self.rx, keys, lambda: go(keys, None), s.timeout_s)
        tp.extra.update(rss_max_mb=round(smp.rss_max, 1), cpu_pct=round(smp.cpu_pct, 1), statuses=dict(statuses))
        self.record(f"bridge_{store}_http_throughput", tp)
        if tp.rate_per_s > 0:
            half = tp.rate_per_s / 2
            n = max(20, min(s.lat_n, int(half * s.lat_s)))
            lk = ids("hh", n)
            res = measure(f"bridge ({store}) HTTP: latency at {half:.0f}/s", self.rx, lk, lambda: go(lk, half),
                          s.timeout_s, offered_rate=round(half, 1))
            self.record(f"bridge_{store}_http_latency_half", res)

    def relay(self) -> None:
        assert self.rx is not None and self.template is not None
        proc = spawn("relay", [PY, "-m", "bench.relay", str(self.broker_port), self.rx.url, SECRET,
                               "bench/relay/+"], self.w)
        try:
            time.sleep(1.0)
            tpl = self.template
            self._mqtt_pair("relay", "thin paho relay", lambda k: ready_contact(tpl, k, f"bench/relay/{k}"), "r",
                            sampler_pid=proc.pid)
        finally:
            proc.stop()

    def nodered(self) -> None:
        assert self.rx is not None and self.template is not None
        missing = nodered.npm_available()
        if missing:
            self.note(f"Node-RED skipped: {missing}")
            return
        t0 = time.monotonic()
        try:
            red_js, version = nodered.install(self.w)
        except Exception as exc:
            self.note(f"Node-RED skipped: npm install failed ({exc!r:.200})")
            return
        self.out["nodered_version"] = version
        print(f"node-red {version} installed in {time.monotonic() - t0:.1f} s", flush=True)
        proc, admin = nodered.start(red_js, self.w, SECRET)
        try:
            nodered.deploy(admin, self.broker_port, "bench/nodered/+", self.rx.url)
            time.sleep(1.5)  # the mqtt-in node connects and subscribes after the deploy returns
            tpl = self.template
            self._mqtt_pair("nodered", f"Node-RED {version}",
                            lambda k: ready_contact(tpl, k, f"bench/nodered/{k}"), "n", sampler_pid=proc.pid)
        finally:
            proc.stop()

    # -- resources ------------------------------------------------------------------------------------------
    def rest_and_cold_start(self) -> None:
        assert self.rx is not None
        env = bridge_env(self.w, "rest", self.rx.url, self.broker_port)
        from bridge.config import Settings

        seed_sync(Settings(db=env["SOSBRIDGE_DB"]), ids("r", self.s.rest_devices))
        starts: list[float] = []
        result: dict[str, Any] = {"devices": self.s.rest_devices}
        tries = 1 if self.s is SMOKE else 3
        for i in range(tries):
            bridge = start_bridge(self.w, "rest", env)
            starts.append(round(bridge.ready_s, 3))
            if i == tries - 1:
                time.sleep(2.0)
                c0, t0 = cpu_s(bridge.proc.pid), time.monotonic()
                time.sleep(5.0 if self.s is not SMOKE else 1.0)
                result["rest_cpu_pct"] = round(100 * (cpu_s(bridge.proc.pid) - c0) / (time.monotonic() - t0), 2)
                result["rest_rss_mb"] = round(rss_mb(bridge.proc.pid), 1)
            bridge.proc.stop()
        result["cold_start_s"] = starts
        result["cold_start_median_s"] = sorted(starts)[len(starts) // 2]
        self.record("rest", result)

    def flood(self) -> None:
        assert self.rx is not None
        n = self.s.flood_n
        env = bridge_env(self.w, "flood", self.rx.url, self.broker_port)
        from bridge.config import Settings

        keys = ids("f", n)
        seed_sync(Settings(db=env["SOSBRIDGE_DB"]), keys)
        bridge = start_bridge(self.w, "flood", env)
        try:
            msgs = [button_alert(k) for k in keys]
            with Sampler(bridge.proc.pid, interval_s=0.1) as smp:
                res = measure(f"flood of {n} alerts", self.rx, keys, lambda: self.publish(msgs, inflight=1000),
                              self.s.timeout_s * 3)
            time.sleep(2.0)
            res.extra.update(rss_max_mb=round(smp.rss_max, 1), rss_after_mb=round(rss_mb(bridge.proc.pid), 1),
                             cpu_pct=round(smp.cpu_pct, 1))
            self.record("flood", res)
        finally:
            bridge.proc.stop()

    def storm(self) -> None:
        assert self.rx is not None
        s = self.s
        env = bridge_env(self.w, "storm", self.rx.url, self.broker_port)
        from bridge.config import Settings

        keys = ids("s", s.storm_devices)
        probe = "probe00001"
        seed_sync(Settings(db=env["SOSBRIDGE_DB"]), [*keys, probe])
        bridge = start_bridge(self.w, "storm", env)
        rng = random.Random(9)
        msgs = [button_alert(k) for k in keys]
        msgs += [msgs[rng.randrange(len(keys))] for _ in range(s.storm_dups)]
        rng.shuffle(msgs)
        # a duplicate never precedes its original in the bench's send-time book-keeping (setdefault)
        rate = len(msgs) / s.storm_window_s
        probe_pub = Publisher(self.broker_port)
        probe_sent: dict[str, float] = {}

        def fire_probe() -> None:
            probe_sent[probe] = time.time()
            probe_pub.client.publish(f"sosbridge/bench/{probe}/alert", button_alert(probe).payload, qos=1)

        def send() -> dict[str, float]:
            pub = Publisher(self.broker_port, inflight=1000)
            try:
                t0 = time.monotonic()
                sent = pub.send(msgs, rate=rate, deadline_s=s.storm_window_s * 3,
                                at={s.storm_window_s / 2: fire_probe})
                self.out.setdefault("storm_publish_s", round(time.monotonic() - t0, 2))
                pub.wait_acked(len(msgs), timeout_s=s.timeout_s)
                sent.update(probe_sent)
                return sent
            finally:
                pub.close()

        try:
            with Sampler(bridge.proc.pid, interval_s=0.2) as smp:
                res = measure(f"storm: {s.storm_devices} devices + {s.storm_dups} duplicates", self.rx,
                              [*keys, probe], send, s.timeout_s * 3)
            probe_pub.close()
            counts = [res.per_key.get(k, 0) for k in keys]
            res.extra.update(
                published=len(msgs) + 1,
                publish_window_s=self.out.get("storm_publish_s"),
                delivered_once=sum(1 for c in counts if c == 1),
                delivered_twice_or_more=sum(1 for c in counts if c > 1),
                lost=sum(1 for c in counts if c == 0),
                probe_delivered=probe in res.per_key,
                rss_max_mb=round(smp.rss_max, 1),
                cpu_pct=round(smp.cpu_pct, 1),
            )
            rows = self.rx.rows()
            probe_rows = [r for r in rows if r[0] == probe]
            if probe_rows and probe in probe_sent:
                res.extra["probe_latency_s"] = round(probe_rows[0][1] - probe_sent[probe], 3)
            res.extra["time_to_last_delivery_s"] = res.elapsed_s
            self.record("storm", res)
        finally:
            bridge.proc.stop()


# -- report ---------------------------------------------------------------------------------------------------
def report(out: dict[str, Any]) -> str:
    runs = out["runs"]
    parts: list[str] = []
    m = out["machine"]
    parts.append(f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['mem_gb']} GB RAM, Python {m['python']}, "
                 f"SQLite {m['sqlite']}; broker, receiver, load generator and contender share the cores.")
    base = runs.get("bridge_sqlite_mqtt_throughput", {}).get("rate_per_s") or 0.0
    rows = []
    contenders = [
        ("bridge (SQLite) MQTT", "bridge_sqlite_mqtt"),
        ("bridge (Redis) MQTT", "bridge_redis_mqtt"),
        ("bridge (SQLite) HTTP", "bridge_sqlite_http"),
        ("bridge (Redis) HTTP", "bridge_redis_http"),
        ("thin paho relay", "relay"),
        (f"Node-RED {out.get('nodered_version', '')}".strip(), "nodered"),
    ]
    for label, key in contenders:
        tp = runs.get(f"{key}_throughput")
        if not tp:
            continue
        lat = runs.get(f"{key}_latency_half", {})
        lt = lat.get("latency", {})
        rate = tp.get("rate_per_s") or 0.0
        rows.append([label, rate, f"{base / rate:.2f}x" if rate and base else None,
                     lat.get("offered_rate"), lt.get("p50_ms"), lt.get("p95_ms"), lt.get("p99_ms"),
                     f"{tp.get('delivered')}/{tp.get('expected')}"])
    raw = runs.get("raw_broker")
    if raw:
        rows.append(["mosquitto_pub → mosquitto_sub", raw["rate_per_s"],
                     f"{base / raw['rate_per_s']:.2f}x" if base else None, None, None, None, None,
                     f"{raw['delivered']}/{raw['expected']}"])
    parts.append(table(["path", "alerts/s", "bridge / this", "latency run /s", "p50 ms", "p95 ms", "p99 ms",
                        "delivered"], rows))
    five = runs.get("bridge_sqlite_mqtt_latency_500")
    if five:
        lt = five["latency"]
        parts.append(f"Bridge (SQLite) MQTT at 500 alerts/s: p50 {lt.get('p50_ms')} ms, p95 {lt.get('p95_ms')} ms, "
                     f"p99 {lt.get('p99_ms')} ms ({five['delivered']}/{five['expected']} delivered).")
    st = runs.get("storm")
    if st:
        e = st["extra"]
        parts.append(table(
            ["storm", "value"],
            [["messages published", e.get("published")], ["publish window s", e.get("publish_window_s")],
             ["devices delivered exactly once", e.get("delivered_once")],
             ["devices delivered more than once", e.get("delivered_twice_or_more")],
             ["devices lost", e.get("lost")], ["time to last delivery s", e.get("time_to_last_delivery_s")],
             ["probe SOS latency s", e.get("probe_latency_s")], ["bridge RSS max MB", e.get("rss_max_mb")]]))
    res_rows = []
    rest = runs.get("rest")
    if rest:
        res_rows += [[f"RSS at rest, {rest['devices']} devices (MB)", rest.get("rest_rss_mb")],
                     ["CPU at rest (%)", rest.get("rest_cpu_pct")],
                     ["cold start → /readyz 200 (s, median of 3)", rest.get("cold_start_median_s")]]
    tp = runs.get("bridge_sqlite_mqtt_throughput")
    if tp and tp.get("extra"):
        res_rows += [["RSS max under MQTT load (MB)", tp["extra"].get("rss_max_mb")],
                     ["CPU under MQTT load (% of one core)", tp["extra"].get("cpu_pct")]]
    fl = runs.get("flood")
    if fl:
        res_rows += [[f"flood of {fl['expected']}: RSS max / after (MB)",
                      f"{fl['extra'].get('rss_max_mb')} / {fl['extra'].get('rss_after_mb')}"],
                     [f"flood of {fl['expected']}: delivered, alerts/s", f"{fl['delivered']}, {fl['rate_per_s']}"]]
    if res_rows:
        parts.append(table(["resources", "value"], res_rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="a tiny run that only checks the bench works")
    ap.add_argument("--no-nodered", action="store_true")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--only", nargs="*", default=None,
                    help="raw sqlite redis relay nodered rest flood storm (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = ap.parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes()
    want = set(args.only or ["raw", "sqlite", "redis", "relay", "nodered", "rest", "flood", "storm"])
    if args.no_nodered or args.smoke:
        want.discard("nodered")
    if args.no_redis:
        want.discard("redis")
    workdir = Path(tempfile.mkdtemp(prefix="sosbridge-bench-"))
    started = time.time()
    failed = False
    with Bench(sizes, workdir, args) as bench:
        steps = [("raw", bench.raw_broker), ("sqlite", lambda: bench.bridge_contenders("sqlite")),
                 ("redis", lambda: bench.bridge_contenders("redis")), ("relay", bench.relay),
                 ("nodered", bench.nodered), ("rest", bench.rest_and_cold_start), ("flood", bench.flood),
                 ("storm", bench.storm)]
        for name, step in steps:
            if name not in want:
                continue
            if name in ("relay", "nodered") and bench.template is None:
                bench.note(f"{name} skipped: it needs a contact from the bridge run (sqlite) first")
                continue
            print(f"== {name}", flush=True)
            try:
                step()
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
    print(f"results: {RESULTS / (name + '.json')}")
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
