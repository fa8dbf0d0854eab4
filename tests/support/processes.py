"""`sosbridge serve` and `sosbridge receiver` as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bridge.infra.serving import wait_http
from tests.support.paths import ROOT


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


def sosbridge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bridge.app.cli", *args]


def start_bridge_process(env: dict[str, str], port: int, log: Path) -> Proc:
    full_env = {**os.environ, **env, "SOSBRIDGE_HTTP_PORT": str(port), "SOSBRIDGE_HTTP_HOST": "127.0.0.1"}
    fh = open(log, "ab")
    proc = subprocess.Popen(sosbridge_cmd("serve"), env=full_env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc=proc)
    return Proc(proc, url, log)


def start_receiver_process(port: int, secret: str, jsonl: Path, bridge_url: str, token: str, log: Path) -> Proc:
    fh = open(log, "ab")
    cmd = sosbridge_cmd(
        "receiver",
        "--port",
        str(port),
        "--secret",
        secret,
        "--jsonl",
        str(jsonl),
        "--bridge-url",
        bridge_url,
        "--platform-token",
        token,
        "--ack-after",
        "0.05",
    )
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc=proc)
    return Proc(proc, url, log)

