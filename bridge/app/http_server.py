"""The bridge's HTTP server settings for uvicorn, and a guard against slow clients.

- `http_server_options(settings)`: uvicorn keyword arguments (keep-alive, concurrency, proxy headers and
  the request-deadline protocol below).
- `RequestDeadlineProtocol`: uvicorn has no timeout on receiving a request (its keep-alive timer runs only
  *between* requests and every byte resets it), so a client that connects and sends nothing, or trickles
  its header, holds a socket forever. This protocol gives each request a deadline for its header and body,
  and caps connections that have not yet delivered a whole request: past the cap the oldest of them is
  closed, so half-open connections can never take the file descriptors a genuine SOS needs. It is
  uvicorn's httptools protocol (a C parser: h11's pure-Python one cost about a tenth of the CPU of a
  `POST /v1/alerts`), hooked on the parser's callbacks, with h11's 16 KiB cap on a request's head kept.
- `CorkedTransport`: what the protocol writes in one turn of the loop goes out in one send (uvicorn
  writes a response's head and its body separately: two system calls and two segments per answer).

See docs/operations/security.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridge.infra.corked import CorkedWriter

if TYPE_CHECKING:
    from bridge.app.config import Settings

log = logging.getLogger("sosbridge.security")

# The most a request line and headers may take, as h11's default (the server before httptools): past it the
# request is answered 400 and the connection closed, so a fast client cannot grow a header without bound
# within its deadline.
MAX_HEAD_BYTES = 16 * 1024


class _PendingConnections:
    """Connections of one server that have not delivered a whole request yet, oldest first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[int, RequestDeadlineProtocol] = OrderedDict()
        self.evicted = 0
        self.timed_out = 0

    def add(self, conn: RequestDeadlineProtocol) -> None:
        self.items[id(conn)] = conn
        self.items.move_to_end(id(conn))
        while len(self.items) > self.limit:
            _, oldest = self.items.popitem(last=False)
            self.evicted += 1
            oldest.drop("too many pending connections")

    def discard(self, conn: RequestDeadlineProtocol) -> None:
        self.items.pop(id(conn), None)


class CorkedTransport:
    """A transport whose writes are joined until the end of the loop's turn, then sent at once
    (bridge/infra/corked.py).

    Everything else is the wrapped transport's. Closing (or `write_eof`) sends what is pending first;
    `abort` drops it, as the transport's own abort drops its buffer."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._corked = CorkedWriter(loop, transport.write)
        self._direct = False  # after close: the transport writes (or drops) by itself

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._direct:
            self._transport.write(data)
        else:
            self._corked.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        self._corked.flush()
        self._direct = True
        self._transport.close()

    def write_eof(self) -> None:
        self._corked.flush()
        self._direct = True
        self._transport.write_eof()

    def abort(self) -> None:
        self._corked.drop()
        self._direct = True
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._corked.pending_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RequestDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on receiving each request, a cap on pending connections
    and a cap on the size of a request's head.

    The deadline starts when the connection opens (or, on a kept-alive connection, at the first byte of
    the next request) and ends when the request's body has been received in full; a response may then
    take as long as it needs. A request pipelined behind one the bridge has not answered yet gets its
    deadline when that answer is sent (uvicorn stops reading meanwhile: the wait is the bridge's, not the
    client's). Configure with `configured(timeout_s, max_pending)`.
    """

    request_timeout_s: float = 10.0
    pending: _PendingConnections = _PendingConnections(256)

    @classmethod
    def configured(cls, timeout_s: float, max_pending: int) -> type[RequestDeadlineProtocol]:
        return type(
            "RequestDeadlineProtocol",
            (cls,),
            {"request_timeout_s": timeout_s, "pending": _PendingConnections(max_pending)},
        )

    _deadline: asyncio.TimerHandle | None = None
    _begun = 0  # requests whose first byte was parsed on this connection
    _answered = 0  # responses sent in full
    _receiving = False  # a request is begun and its body not yet in
    _in_head = True  # the bytes being read belong to a request's head (or come before one)
    _head_bytes = 0
    _completed_in_chunk = False
    _refusal: str | None = None  # a 400 held back until the answers owed to earlier requests are sent

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # the parser stopped at a bad request; nothing after it is read
        idle = self._deadline is None and not self._receiving and self._answered >= self._begun
        self._completed_in_chunk = False
        super().data_received(data)
        # Armed after the parser ran, at the same instant: a request that came whole in this read (the
        # usual case) costs no timer. The first bytes of a further request, or of one pipelined behind
        # requests answered already, start its deadline; so do bytes that begin no request at all.
        if self._deadline is None and not self.transport.is_closing() and (
            (self._receiving and self._answered >= self._begun - 1) or (idle and not self._completed_in_chunk)
        ):
            self._arm()
        if self._in_head and not self.transport.is_closing():
            # Where a request began inside this chunk the bytes before it are unknown: count from the next.
            self._head_bytes = 0 if self._completed_in_chunk else self._head_bytes + len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                log.debug("closing connection", extra={"why": "request head too large", "client": str(self.client)})
                self.send_400_response("Request header too large.")

    def send_400_response(self, msg: str) -> None:
        """A bad request (or a head too large): answered 400 and the connection closed, as uvicorn does, but
        only after the answers to the requests before it on this connection (h11 answered those first; the
        C parser sees the bad bytes in the same read as a good request before them)."""
        self._disarm()
        self._receiving = False
        if self._owed():
            self._refusal = msg
            self.flow.pause_reading()
            return
        super().send_400_response(msg)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the websocket protocol's now
        self._receiving = False
        super().handle_websocket_upgrade()

    def _owed(self) -> bool:
        return (self.cycle is not None and not self.cycle.response_complete) or bool(self.pipeline)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun += 1
        self._receiving = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._receiving = False
        self._in_head = True
        self._completed_in_chunk = True
        self._disarm()  # received in full

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._answered += 1
        if self._refusal is not None:
            if not self._owed() and not self.transport.is_closing():
                self._unset_keepalive_if_required()
                super().send_400_response(self._refusal)
            return
        if self._deadline is None and self._receiving and self._answered >= self._begun - 1:
            self._arm()  # a request pipelined behind the one just answered: its deadline starts now

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._expired)
        self.pending.add(self)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.pending.discard(self)

    def _expired(self) -> None:
        self._deadline = None
        self.pending.timed_out += 1
        self.drop("request not received in time")

    def drop(self, why: str) -> None:
        """Close a connection whose request is incomplete. No answer: the client never finished asking."""
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            log.debug("closing slow connection", extra={"why": why, "client": str(self.client)})
            self.transport.close()


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit (as Go's runtime does); returns the soft limit."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 1 << 16
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def http_server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config keyword arguments for the bridge's HTTP API (serve, embedded bridge).

    Sized against the process's descriptor limit so that accepting never fails for want of one: pending
    (unfinished) connections get at most a quarter of it, and asyncio accepts at most `backlog` sockets per
    loop pass (uvicorn's 2048 would accept far past a 1024 limit before any protocol could close one). The
    backlog is an eighth: the connections evicted during a pass are only closed on the next one, so at the
    peak a pass holds the pending ones, the ones it accepted and the ones it is closing (measured: with a
    quarter, a flood of half-open connections reached EMFILE under a 200-descriptor limit).
    """
    fds = raise_fd_limit()
    quarter = max(8, fds // 4)
    eighth = max(8, fds // 8)
    pending = min(settings.http_max_pending, quarter)
    protocol = RequestDeadlineProtocol.configured(settings.http_request_timeout_s, pending)
    return {
        "host": settings.http_host,
        "port": settings.http_port,
        "http": protocol,
        "backlog": min(2048, eighth),
        "timeout_keep_alive": settings.http_keepalive_s,
        "limit_concurrency": min(settings.http_limit_concurrency, max(16, fds // 2)),
        "proxy_headers": settings.http_proxy_headers,
        "forwarded_allow_ips": settings.http_forwarded_allow_ips,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
    }
