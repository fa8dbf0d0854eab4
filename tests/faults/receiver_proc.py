"""The reference receiver (simulator.platform.receiver.Receiver) as a process that starts in a fault mode.

`sosbridge receiver` has no mode option, and its POST /control/mode/{mode} is shadowed by the
/control/{event}/{alert_id} route (reported to the lead), so the slow scenario starts it here instead.
"""

from __future__ import annotations

import argparse

import uvicorn

from simulator.platform.receiver import Receiver


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--jsonl", required=True)
    p.add_argument("--bridge-url", required=True)
    p.add_argument("--platform-token", required=True)
    p.add_argument("--mode", choices=["normal", "down", "slow"], default="normal")
    p.add_argument("--slow-s", type=float, default=5.0)
    a = p.parse_args()
    rx = Receiver(a.secret, a.jsonl, a.bridge_url, a.platform_token, auto_ack_s=0.05)
    rx.mode, rx.slow_s = a.mode, a.slow_s
    uvicorn.run(rx.create_app(), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
