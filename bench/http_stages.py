"""Where the event loop's time goes per `POST /v1/alerts`, from py-spy's collapsed stacks.

`python -m bench.http_stages FILE ALERTS [RATE]` (bench.profile --http prints it too): the MainThread's
samples (the loop, which bounds the rate) split into stages, in µs per alert and % of the thread. A
sample goes to the first stage whose test matches its stack, in the order below. Pure.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Callable
from pathlib import Path

Stage = tuple[str, Callable[[list[str], str], bool]]

STAGES: list[Stage] = [
    ("idle (waiting in select)", lambda fr, s: fr[-1].startswith("EpollSelector.select")),
    ("delivery (forwarder, aiohttp)", lambda fr, s: "bridge/delivery/" in s or "aiohttp/" in s),
    ("HTTP: token check", lambda fr, s: "device_for_token" in s or "by_token" in s or "api/auth.py" in s),
    ("ingress + pipeline", lambda fr, s: "bridge/ingress/" in s or "bridge/alerts/" in s),
    ("HTTP: socket send", lambda fr, s: "Transport.write" in s),
    ("HTTP: framework, middleware, handler", lambda fr, s: "run_asgi" in s),
    ("HTTP: protocol (uvicorn httptools)",
     lambda fr, s: "uvicorn/" in s or "/h11/" in s or "httptools" in s or "http_server.py" in s),
    ("MQTT adapter (idle broker link)", lambda fr, s: "device_adapters/mqtt" in s),
    ("thread hand-off (store futures)", lambda fr, s: "concurrent/futures" in s or "SqliteStore" in s),
    ("asyncio, other", lambda fr, s: True),
]


def stages(collapsed: Path, alerts: int, rate_hz: float = 200.0) -> list[tuple[str, float, float]]:
    """(stage, µs per alert, % of the loop thread's samples), in STAGES order."""
    counts: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or "MainThread" not in frames[0]:
            continue
        joined = ";".join(frames)
        name = next(n for n, test in STAGES if test(frames, joined))
        counts[name] += int(count)
    total = sum(counts.values()) or 1
    return [(n, 1e6 * counts[n] / rate_hz / alerts, 100 * counts[n] / total) for n, _ in STAGES]


def render(rows: list[tuple[str, float, float]]) -> str:
    busy = sum(us for name, us, _ in rows if not name.startswith("idle"))
    lines = [f"{us:7.0f} µs/alert {pct:5.1f}%  {name}" for name, us, pct in rows]
    return "\n".join([*lines, f"{busy:7.0f} µs/alert busy in the loop thread"])


if __name__ == "__main__":
    print(render(stages(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 200.0)))
