"""The notifier's endpoint: one mutual-TLS port for the WebSocket (subscribe/notify) and for EIDO retrieval.

`wss://host:port/path` is where the bridge listens. A WebSocket upgrade on `path` is a subscriber socket
(no subprotocol: none is registered for NENA-STA-024); a plain `GET path/{referenceId}` answers the
incident's latest EIDO as `application/emergency.eido+json` (404 when unknown). Both need a client
certificate signed by the configured CA. Requests up to 64 KiB are read; larger ones answer 413.
"""

from __future__ import annotations

import json
import logging
import ssl
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge.delivery.eido_ws.hub import EIDO_MEDIA_TYPE, Hub, Peer
from bridge.delivery.eido_ws.messages import MAX_REQUEST_BYTES

log = logging.getLogger("sosbridge.eido_ws")


def server_tls(cert_file: str, key_file: str, client_ca_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca_file)
    ctx.load_cert_chain(cert_file, key_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    # One answer per connection (websockets closes it after a non-upgrade response): say so to the client.
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


class NotifierServer:
    def __init__(self, hub: Hub, url: str, tls: ssl.SSLContext) -> None:
        parts = urlsplit(url)
        self.hub = hub
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port if parts.port is not None else 443
        self.path = parts.path.rstrip("/") or "/"
        self.tls = tls
        self._server: Server | None = None

    def _retrieve(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None if urlsplit(request.path).path.rstrip("/") in (self.path, "") else _response(
                HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        prefix = self.path.rstrip("/") + "/"
        path = urlsplit(request.path).path
        if not path.startswith(prefix):
            return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        inc = self.hub.find(unquote(path[len(prefix):]))
        if inc is None:
            return _response(HTTPStatus.NOT_FOUND, b"no such incident\n", "text/plain")
        return _response(HTTPStatus.OK, json.dumps(inc.doc).encode(), EIDO_MEDIA_TYPE)

    async def _serve(self, ws: ServerConnection) -> None:
        peer = Peer(ws.send, ws.close, name=str(ws.remote_address))
        try:
            async for message in ws:  # a service loop: ends when the socket closes or stop() closes it
                await self.hub.handle(peer, message)
        except ConnectionClosed:
            pass
        finally:
            self.hub.closed(peer)

    async def start(self) -> None:
        self._server = await serve(
            self._serve, self.host, self.port, ssl=self.tls, process_request=self._retrieve,
            max_size=4 * MAX_REQUEST_BYTES, ping_interval=20, ping_timeout=20, close_timeout=2,
        )
        log.info("EIDO notifier listening", extra={"host": self.host, "port": self.bound_port, "path": self.path})

    @property
    def bound_port(self) -> int:
        if self._server is None:
            return self.port
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()  # bounded: close_timeout per connection
