"""What `sosbridge receiver` prints: where it listens, and one line per webhook (accepted or rejected).

An ASGI wrapper around the receiver's app: it reads only the status of each answer to POST /contacts,
so the receiver's own checks stay where they are.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WEBHOOK_PATH = "/contacts"
_OUTCOMES = {
    200: "accepted",
    401: "REJECTED: bad signature (check that both sides use the same SOSBRIDGE_PLATFORM_SECRET)",
    422: "REJECTED: invalid body (stored with its errors)",
    503: "answered 503 (mode down)",
}


def banner(host: str, port: int, jsonl: Path | None) -> list[str]:
    base = f"http://{host}:{port}"
    lines = [
        f"reference contact platform listening on {base}",
        f"  webhook   POST {base}{WEBHOOK_PATH}   (point SOSBRIDGE_PLATFORM_URL here)",
        f"  contacts  GET  {base}{WEBHOOK_PATH}",
        f"  console   {base}/   (operator console in a browser)",
    ]
    if jsonl is not None:
        lines.append(f"  stored in {jsonl.expanduser().resolve()}")
    return lines


class WebhookReport:
    def __init__(self, app: ASGIApp, out: TextIO | None = None) -> None:
        self.app = app
        self.out = out or sys.stdout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != WEBHOOK_PATH or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        client = scope.get("client") or ("?", 0)
        at = datetime.now(UTC).strftime("%H:%M:%S")
        outcome = _OUTCOMES.get(status, f"answered {status}")
        self.out.write(f"{at} POST {WEBHOOK_PATH} from {client[0]}: {status} {outcome}\n")
        self.out.flush()
