"""A real Redis Sentinel set for the fault suite: a primary, two replicas and three sentinels, all
`redis-server` processes on loopback (a sentinel is `redis-server sentinel.conf --sentinel`, the same
binary Debian's `redis-sentinel` package links). Fast timings, so a failover takes about two seconds:
down-after-milliseconds 500, failover-timeout 2000. Data nodes use AOF with fsync every second, the
setting docs/operations/redis.md recommends together with the bridge's replication guard. Two replicas,
as that page recommends: with `min_replicas=1`, the promoted one still has a replica to confirm writes,
so alerts are acknowledged again as soon as the failover is over (with one replica, not until the old
primary is back and the sentinels have made it a replica, about ten seconds later).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import redis

from bridge.infra.serving import wait_port
from tests.faults.harness import binary
from tests.support.ports import free_port

SERVICE = "sosbridge"


class SentinelSet:
    def __init__(self, workdir: Path, sentinels: int = 3) -> None:
        exe = binary("redis-sentinel") or binary("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server")
        self.exe = binary("redis-server") or exe
        self.workdir = workdir
        self.data_ports = [free_port() for _ in range(3)]  # [0] starts as the primary, the others replicate it
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _data_cmd(self, port: int, replica_of: int | None) -> list[str]:
        d = self.workdir / f"redis-{port}"
        d.mkdir(parents=True, exist_ok=True)
        cmd = [self.exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
               "--appendfsync", "everysec", "--dir", str(d)]
        if replica_of is not None:
            cmd += ["--replicaof", "127.0.0.1", str(replica_of)]
        return cmd

    def _spawn(self, port: int, cmd: list[str]) -> None:
        log = open(self.workdir / f"{port}.log", "ab")
        self.procs[port] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_port(port)

    def start(self) -> None:
        primary, *replicas = self.data_ports
        self._spawn(primary, self._data_cmd(primary, None))
        for replica in replicas:
            self._spawn(replica, self._data_cmd(replica, primary))
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"  # sentinels rewrite their file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 500\n"
                f"sentinel failover-timeout {SERVICE} 2000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._spawn(port, [self.exe, str(conf), "--sentinel"])
        self.wait_replicated(primary, timeout=20)

    def primary_port(self) -> int | None:
        """The primary the sentinels' majority names now (None while they do not agree)."""
        seen = []
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                addr = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(SERVICE)
                if addr:
                    seen.append(int(addr[1]))
        best = max(set(seen), key=seen.count, default=None)
        return best if best is not None and seen.count(best) >= 2 else None

    def wait_replicated(self, primary: int, timeout: float) -> None:
        """Until every replica of `primary` is linked and the sentinels see them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                info = redis.Redis(port=primary, socket_timeout=1).info("replication")
                known = redis.Redis(port=self.sentinel_ports[0], socket_timeout=1).sentinel_slaves(SERVICE)
                linked = [r for r in known if r.get("master-link-status") == "ok"]
                replicas = len(self.data_ports) - 1
                if info.get("connected_slaves", 0) >= replicas and len(linked) >= replicas:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"no replica of {primary} within {timeout} s")

    def kill9(self, port: int) -> None:
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart_data_node(self, port: int) -> None:
        """Restart a killed data node as it was configured (the sentinels make it a replica if demoted)."""
        self._spawn(port, self._data_cmd(port, None))

    def wait_failover(self, old: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.primary_port()
            if now is not None and now != old:
                return now
            time.sleep(0.05)
        raise TimeoutError(f"no failover away from {old} within {timeout} s")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
