"""Profile the bridge's hot path under MQTT load with py-spy (sampling, attached to the real process).

Usage: python -m bench.profile [--n 3000] [--http] [--redis] [--intake N [--spy-intake]] [--timeline] [--no-spy]
                               [--py-spy PATH]
(py-spy from PyPI: pip install py-spy)
`--http` profiles `POST /v1/alerts` instead (16 concurrent wearables, as the bench's `http` step);
`--redis` puts the bridge on a Redis store (a redis-server of its own, no persistence) instead of SQLite;
`--intake N` runs N intake processes on it (py-spy records the main process; with `--spy-intake`, the first
intake process).
`--timeline` prints each thread's, the delivery processes' and the machine's CPU every 0.25 s
(bench/timeline.py); `--no-spy` runs without py-spy (the rate, the CPU per alert and the timeline only).
Writes bench/results/profile-<time>.txt (collapsed stacks) and prints the top frames by own and total
samples, so a fix can be checked against the same view.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import children, children_cpu_s, cpu_user_system_s, start_mosquitto, start_redis
from bench.harness import RecorderClient, bridge_env, measure, start_bridge, stop_quietly
from bench.http_stages import render, stages
from bench.load import Publisher, button_alert
from bench.run import RESULTS, ids
from bench.seed import seed_sync
from bench.timeline import Timeline
from bench.wearables import http_send


def child_kind(pid: int) -> str:
    """"delivery" or "intake": which `python -m bridge.app.<kind>_process` a child of the bridge runs."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return "gone"
    for kind in ("delivery", "intake"):
        if f"bridge.app.{kind}_process".encode() in cmdline:
            return kind
    return "other"


def summarise(collapsed: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = [f"{samples} samples", "", "own time:"]
    out += [f"{100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "total time (frame on the stack):"]
    out += [f"{100 * n / samples:5.1f}%  {f}" for f, n in total.most_common(top * 2)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    ap.add_argument("--idle", action="store_true", help="include idle frames")
    ap.add_argument("--gil", action="store_true", help="only the thread holding the GIL (where Python spends CPU)")
    ap.add_argument("--http", action="store_true", help="POST /v1/alerts with 16 concurrent clients instead")
    ap.add_argument("--redis", action="store_true", help="the Redis store instead of SQLite")
    ap.add_argument("--intake", type=int, default=0,
                    help="intake processes (SOSBRIDGE_INTAKE_WORKERS; implies --redis); py-spy records the main one")
    ap.add_argument("--spy-intake", action="store_true", help="py-spy records the first intake process")
    ap.add_argument("--timeline", action="store_true", help="CPU per thread and process every 0.25 s")
    ap.add_argument("--no-spy", action="store_true", help="no py-spy: rate, CPU per alert, timeline")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sosbridge-profile-"))
    broker, port = start_mosquitto(workdir)
    rx = RecorderClient(workdir)
    bridge = None
    redis = None
    try:
        redis_url = None
        if args.redis or args.intake:
            redis, redis_port = start_redis(workdir)
            redis_url = f"redis://127.0.0.1:{redis_port}/"
        extra = {"SOSBRIDGE_COAP_ENABLED": "false"}
        if args.intake:
            extra["SOSBRIDGE_INTAKE_WORKERS"] = str(args.intake)
        env = bridge_env(workdir, "profile", rx.url, port, redis_url, extra=extra)
        from bridge.app.config import Settings

        keys = ids("p", args.n)
        seed_sync(Settings(db=env["SOSBRIDGE_DB"], redis_url=redis_url), [] if args.http else keys,
                  keys if args.http else [])
        bridge = start_bridge(workdir, "profile", env)
        time.sleep(1.0)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.txt"
        target = bridge.proc.pid
        if args.spy_intake:
            deadline = time.monotonic() + 30
            while not (intake := [c for c in children(bridge.proc.pid) if child_kind(c) == "intake"]):
                if time.monotonic() > deadline:
                    raise RuntimeError("no intake process came up")
                time.sleep(0.1)
            target = intake[0]
        cmd = [args.py_spy, "record", "--pid", str(target), "--format", "raw", "--rate", "200",
               "--output", str(out), "--nonblocking", "--threads"]
        if args.idle:
            cmd.append("--idle")
        if args.gil:
            cmd.append("--gil")
        spy = None if args.no_spy else subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)

        url = bridge.url

        def send() -> dict[str, float]:
            if args.http:
                return http_send(url, keys, concurrency=16, deadline_s=300).sent
            pub = Publisher(port)
            try:
                sent = pub.send([button_alert(k) for k in keys])
                pub.wait_acked(len(keys))
                return sent
            finally:
                pub.close()

        cpu_before = cpu_user_system_s(bridge.proc.pid)
        children_before = children_cpu_s(bridge.proc.pid)  # `serve --workers 2`: its delivery process
        timeline = Timeline(bridge.proc.pid)
        with timeline if args.timeline else contextlib.nullcontext():
            res = measure("profile", rx, keys, send, 300)
        cpu_after = cpu_user_system_s(bridge.proc.pid)
        children_after = children_cpu_s(bridge.proc.pid)
        user, system = (cpu_after[0] - cpu_before[0]), (cpu_after[1] - cpu_before[1])
        child = sum(children_after[c] - children_before[c] for c in children_after if c in children_before)
        by_kind: collections.Counter[str] = collections.Counter()
        for c in children_after:
            if c in children_before:
                by_kind[child_kind(c)] += children_after[c] - children_before[c]
        err = b""
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            _, err = spy.communicate(timeout=60)
        print(f"{res.delivered}/{res.expected} delivered at {res.rate_per_s}/s")
        # CPU per alert moves far less with the machine's load than the rate does: compare builds by it.
        per = 1e6 / max(1, res.delivered)
        total = user + system + child
        print(f"bridge CPU (every thread, every process) {total:.2f} s: {per * total:.0f} us per alert")
        # The main process is the bottleneck (one core): its share is the figure to compare.
        print(f"  main process {user + system:.2f} s: {per * (user + system):.0f} us per alert "
              f"(user {per * user:.0f}, system {per * system:.0f}); child processes {child:.2f} s: "
              f"{per * child:.0f} us per alert")
        for kind, seconds in sorted(by_kind.items()):
            print(f"  {kind} processes {seconds:.2f} s: {per * seconds:.0f} us per alert")
        if args.timeline:
            print("\nCPU over time, % of one core (the send starts at 0):")
            print(timeline.report())
        if spy is None:
            return 0
        if not out.exists():
            print(f"py-spy wrote nothing: {err.decode()[-500:]}")
            return 1
        print(summarise(out))
        if args.http:
            print("\nper alert, the event loop's thread (bench/http_stages.py):")
            print(render(stages(out, args.n)))
        print(f"collapsed stacks: {out}")
        return 0
    finally:
        stop_quietly(bridge.proc if bridge else None)
        rx.close()
        stop_quietly(broker)
        stop_quietly(redis)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
