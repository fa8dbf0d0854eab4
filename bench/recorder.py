"""The recording receiver: the fast webhook end of every throughput and latency comparison.

A raw asyncio HTTP/1.1 server (keep-alive, pipelining, Content-Length or chunked bodies). Any POST, on any
path, is answered `200` at once, with no signature check and no validation; the receiver stamps the
receipt time (`time.time()`, the clock the load generators stamp send times with) and keeps the
`Idempotency-Key` header and the first bytes of the body in memory. The device id and message type are
found in that body only when the records are read out (a regex on `"device":{"id":"…"` and
`"msg_type":"…"`), so the hot path is: find the end of the request, stamp, append, answer.

Read-outs (not recorded):
  GET    /stats                   {"count", "first_at", "last_at", "rate_per_s"}
  GET    /records?since=N         [[device_id, received_at, idempotency_key, msg_type], ...] from record N
  GET    /sample                  the first recorded body in full (a real contact, for the relays' payload)
  DELETE /records                 forget everything

Usage:
  python -m bench.recorder PORT                      serve on 127.0.0.1:PORT until SIGTERM
  python -m bench.recorder --blast URL N CONNS FILE  POST FILE's bytes N times over CONNS keep-alive
                                                     connections as fast as the recorder answers (its
                                                     own ceiling); prints {"n", "elapsed_s", "errors"}
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

KEEP_BYTES = 4096  # of each body: the device id and msg_type come long before the references list
MAX_HEAD = 64 * 1024
DEVICE_RE = re.compile(rb'"device"\s*:\s*\{\s*"id"\s*:\s*"([^"\\]*)"')
MSG_TYPE_RE = re.compile(rb'"msg_type"\s*:\s*"([^"\\]*)"')
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Book:
    """What was received: parallel lists, appended to in the event loop only."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.keys: list[bytes | None] = []
        self.heads: list[bytes] = []
        self.sample: bytes | None = None

    def add(self, at: float, key: bytes | None, body: bytes) -> None:
        self.times.append(at)
        self.keys.append(key)
        self.heads.append(body[:KEEP_BYTES])
        if self.sample is None:
            self.sample = body

    def reset(self) -> int:
        n = len(self.times)
        self.times, self.keys, self.heads, self.sample = [], [], [], None
        return n

    def stats(self) -> dict[str, Any]:
        n = len(self.times)
        first, last = (self.times[0], self.times[-1]) if n else (None, None)
        rate = round((n - 1) / (last - first), 1) if n > 1 and last and first and last > first else None
        return {"count": n, "first_at": first, "last_at": last, "rate_per_s": rate}

    def rows(self, since: int) -> list[list[Any]]:
        out: list[list[Any]] = []
        for at, key, head in zip(self.times[since:], self.keys[since:], self.heads[since:], strict=True):
            dev = DEVICE_RE.search(head)
            mt = MSG_TYPE_RE.search(head)
            out.append([
                dev.group(1).decode() if dev else None, at, key.decode("latin-1") if key else None,
                mt.group(1).decode() if mt else None,
            ])
        return out


def _json_response(doc: Any, close: bool) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    conn = b"Connection: close\r\n" if close else b""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + conn + b"\r\n" + body)


def _chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at buf[start]; (body, end) or None when incomplete."""
    parts: list[bytes] = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)  # optional trailers end with an empty line
            return (b"".join(parts), end + 4) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos:pos + size]))
        pos += size + 2


class RecorderProtocol(asyncio.Protocol):
    def __init__(self, book: Book) -> None:
        self.book = book
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out: list[bytes] = []
        close = False
        while buf and not close:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    close = True
                break
            lines = bytes(buf[:end]).split(b"\r\n")
            parts = lines[0].split(b" ")
            method, target = parts[0], parts[1] if len(parts) > 1 else b"/"
            length, chunked, key = 0, False, None
            close = parts[-1] == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip() or b"0")
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"idempotency-key":
                    key = value.strip()
                elif name == b"connection":
                    v = value.strip().lower()
                    close = v == b"close" or (close and v != b"keep-alive")
                elif name == b"expect" and b"100-continue" in value.lower() and self.transport is not None:
                    if len(buf) == end + 4:
                        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            start = end + 4
            if chunked:
                got = _chunked(buf, start)
                if got is None:
                    close = False
                    break
                body, stop = got
            else:
                if len(buf) < start + length:
                    close = False
                    break
                body, stop = bytes(buf[start:start + length]), start + length
            del buf[:stop]
            if method == b"POST":
                self.book.add(time.time(), key, body)
                out.append(OK_CLOSE if close else OK)
            else:
                out.append(self._control(method, target, close))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        if close and self.transport is not None:
            self.transport.close()

    def _control(self, method: bytes, target: bytes, close: bool) -> bytes:
        url = urlsplit(target.decode("latin-1"))
        if method == b"GET" and url.path == "/stats":
            return _json_response(self.book.stats(), close)
        if method == b"GET" and url.path == "/records":
            since = int(parse_qs(url.query).get("since", ["0"])[0])
            return _json_response(self.book.rows(since), close)
        if method == b"GET" and url.path == "/sample":
            return _json_response(json.loads(self.book.sample) if self.book.sample else None, close)
        if method == b"DELETE" and url.path == "/records":
            return _json_response({"cleared": self.book.reset()}, close)
        if method == b"GET" and url.path == "/healthz":
            return _json_response({"ok": True}, close)
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    book = Book()
    server = await loop.create_server(lambda: RecorderProtocol(book), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


# -- its own ceiling -----------------------------------------------------------------------------------------
async def blast(url: str, n: int, conns: int, body: bytes, deadline_s: float = 120.0) -> dict[str, Any]:
    """POST `body` n times over `conns` keep-alive connections, each waiting for its answer (no pipelining,
    like every contender's HTTP client). Bounded by n and by deadline_s."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    left = n
    errors = 0
    stop_at = time.monotonic() + deadline_s

    async def one_conn(idx: int) -> None:
        nonlocal left, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            i = 0
            while left > 0 and time.monotonic() < stop_at:
                left -= 1
                i += 1
                head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                        f"Idempotency-Key: blast-{idx}-{i}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                writer.write(head + body)
                answer = await reader.readuntil(b"\r\n\r\n")
                if not answer.startswith(b"HTTP/1.1 200"):
                    errors += 1
        finally:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(one_conn(i) for i in range(conns)))
    return {"n": n - max(left, 0), "elapsed_s": round(time.monotonic() - t0, 3), "errors": errors}


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--blast":
        url, n, conns, path = argv[1], int(argv[2]), int(argv[3]), argv[4]
        with open(path, "rb") as fh:
            body = fh.read()
        print(json.dumps(asyncio.run(blast(url, n, conns, body))), flush=True)
        return
    asyncio.run(serve(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
