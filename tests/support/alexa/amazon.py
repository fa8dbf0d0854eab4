"""A small HTTPS server on loopback standing in for Amazon's Alexa APIs (Device Address, directives).

It serves with a certificate from the test CA, so the skill's API client verifies TLS for real
(SOSBRIDGE_ALEXA_API_CA_BUNDLE points at the test root).
"""

from __future__ import annotations

import json
import re
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .ca import TestCA

ADDRESS_PATH = re.compile(r"^/v1/devices/(?P<device>[^/]+)/settings/address$")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeAmazon:
    ca: TestCA
    addresses: dict[str, tuple[int, dict[str, Any] | None]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def directives(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path == "/v1/directives"]

    def address_calls(self) -> list[Recorded]:
        return [r for r in self.requests if ADDRESS_PATH.match(r.path)]

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def _reply(self, status: int, payload: Any = None) -> None:
                body = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                fake.requests.append(Recorded("GET", self.path, dict(self.headers), None))
                match = ADDRESS_PATH.match(self.path)
                if match is None:
                    self._reply(404, {"type": "NOT_FOUND"})
                    return
                status, address = fake.addresses.get(match["device"], (403, None))
                if status == 403:
                    self._reply(403, {"type": "FORBIDDEN", "message": "The authentication token is not valid."})
                else:
                    self._reply(status, address)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                fake.requests.append(Recorded("POST", self.path, dict(self.headers), json.loads(raw or b"null")))
                self._reply(204)

        leaf = self.ca.issue("localhost", ip="127.0.0.1")
        tmp = Path(tempfile.mkdtemp(prefix="fake-amazon-"))
        (tmp / "cert.pem").write_bytes(leaf.chain_pem)
        (tmp / "key.pem").write_bytes(self.ca.key_pem(leaf))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
