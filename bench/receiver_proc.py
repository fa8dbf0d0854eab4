"""The reference receiver (simulator.platform.receiver.Receiver) in its own process, with read-outs for the bench.

It verifies signatures and validates every contact exactly as `sosbridge receiver` does; it keeps the
records in memory (no JSONL fsync per contact, so the receiver is not what limits the contenders) and
adds `GET /bench/stats`, `GET /bench/records?since=N` (compact rows) and `POST /bench/reset`.
Usage: python -m bench.receiver_proc PORT SECRET
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from simulator.platform.receiver import Receiver


def build(secret: str) -> Any:
    rx = Receiver(secret, jsonl_path=None, bridge_url=None, auto_ack_s=None)
    app = rx.create_app()

    @app.get("/bench/stats")
    async def stats() -> dict[str, int]:
        return {"n": len(rx.records), "rejected": rx.rejected}

    @app.get("/bench/records")
    async def records(since: int = 0) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for r in rx.records[since:]:
            contact = r.get("contact") or {}
            device = (contact.get("device") or {}).get("id")
            rows.append([device, r["received_at"], r["idempotency_key"], r["duplicate"], r["valid"],
                         contact.get("msg_type")])
        return rows

    @app.post("/bench/reset")
    async def reset() -> dict[str, int]:
        return {"cleared": rx.reset()}

    return app


def main() -> None:
    port, secret = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(build(secret), host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
