"""Real SIP servers for the RFC 8876 tests: Kamailio as a scripted PSAP/ESRP and SIPp as a UAS that
answers whatever a scenario says. Each runs from a config written to the test's tmp dir."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import need_binary
from tests.support.ports import free_port

# The PSAP: 501 / 415 / 425 for the users named so (and 415/425 for real defects in the body), else it
# logs what it received (body in base64) and answers 200; sos-200-err answers 200 with an AlertMsg-Error.
KAMAILIO_CFG = r"""#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=tcp:127.0.0.1:{port}
listen=udp:127.0.0.1:{port}
loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "xlog.so"
loadmodule "pv.so"
loadmodule "siputils.so"
modparam("xlog", "buf_size", 65536)

request_route {{
    if (!is_method("MESSAGE")) {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
    if ($rU == "sos-501") {{ sl_send_reply("501", "Not Implemented"); exit; }}
    if ($rU == "sos-425" || !search_body("<incidents>")) {{
        append_to_reply("AlertMsg-Error: 102 ;message=\"not enough information\"\r\n");
        sl_send_reply("425", "Bad Alert Message"); exit;
    }}
    if ($rU == "sos-415" || !search_body("Content-Type: application/EmergencyCallData.cap\+xml")) {{
        append_to_reply("Accept: application/EmergencyCallData.cap+xml, application/pidf+xml\r\n");
        sl_send_reply("415", "Unsupported Media Type"); exit;
    }}
    xlog("L_ALERT", "PSAP-MESSAGE|$ru|$hdr(Call-Info)|$hdr(Geolocation)|$hdr(Geolocation-Routing)|"
         "$hdr(Supported)|$hdr(Idempotency-Key)|$hdr(Content-Type)|$proto|$(rb{{s.encode.base64}})\n");
    if ($rU == "sos-200-err") {{
        append_to_reply("AlertMsg-Error: 103 ;message=\"payload corrupted\"\r\n");
    }}
    sl_send_reply("200", "OK");
}}
"""

_LINE = re.compile(r"PSAP-MESSAGE\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|(\S*)")


@dataclass(frozen=True)
class Received:
    request_uri: str
    call_info: str
    geolocation: str
    geolocation_routing: str
    supported: str
    idempotency_key: str
    content_type: str
    proto: str
    body: bytes


@dataclass
class Server:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    def uri(self, user: str = "sos", transport: str = "tcp") -> str:
        return f"sip:{user}@127.0.0.1:{self.port};transport={transport}"

    def received(self) -> list[Received]:
        text = self.log.read_text(errors="replace")
        return [Received(m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], base64.b64decode(m[9]))
                for m in _LINE.finditer(text)]

    def wait_exit(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and every process it forked: each runs in a session of its own (Kamailio forks
    workers, and one outlived its killed parent in a suite run, left with init as its parent)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers the parent did not take down with it
    if proc.poll() is None:
        proc.wait(10)


@contextlib.contextmanager
def kamailio(tmp: Path) -> Iterator[Server]:
    binary = need_binary("kamailio")
    port = free_port()
    cfg = tmp / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(port=port))
    run = tmp / "kamailio-run"
    run.mkdir(exist_ok=True)
    log = tmp / "kamailio.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([binary, "-f", str(cfg), "-DD", "-E", "-Y", str(run)], stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(port, proc, log)
        yield Server(port, log, proc)
    finally:
        _stop(proc)


# SIPp UAS scenarios: receive one MESSAGE, then answer (or not).
_ANSWER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="psap">
  <recv request="MESSAGE" />
  <send><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]sipp[call_number]
[last_Call-ID:]
[last_CSeq:]
{extra}Content-Length: 0

]]></send>
</scenario>
"""
# No answer at all; SIPp keeps the connection open for `pause` ms.
_SILENT = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="silent">
  <recv request="MESSAGE" />
  <pause milliseconds="{pause}" />
</scenario>
"""
# The PSAP drops the connection after reading the request.
_DROP = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="drop">
  <recv request="MESSAGE" />
  <nop><action><exec int_cmd="stop_now" /></action></nop>
</scenario>
"""


def scenario_answer(status: str, *headers: str) -> str:
    return _ANSWER.format(status=status, extra="".join(h + "\n" for h in headers))


def scenario_silent(pause_ms: int) -> str:
    return _SILENT.format(pause=pause_ms)


def scenario_drop() -> str:
    return _DROP


@contextlib.contextmanager
def sipp(tmp: Path, scenario: str, name: str = "uas") -> Iterator[Server]:
    """SIPp over TCP running `scenario` once (-m 1), on a free port."""
    binary = need_binary("sipp")
    port = free_port()
    path = tmp / f"{name}.xml"
    path.write_text(scenario)
    log = tmp / f"{name}.log"
    cmd = [binary, "-sf", str(path), "-t", "t1", "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-nostdin",
           "-trace_err", "-error_file", str(tmp / f"{name}-errors.log")]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp,
                                start_new_session=True)
    try:
        _wait_for_listen(port, proc, log)
        yield Server(port, log, proc)
    finally:
        _stop(proc)


def _wait_for_listen(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    """Wait until SIPp listens, without connecting (a probe connection would count as its one call)."""
    deadline = time.monotonic() + timeout
    needle = f":{port:04X} ".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sipp exited early: {log.read_text(errors='replace')[-2000:]}")
        with open("/proc/net/tcp", "rb") as fh:
            # a listening socket (state 0A) on our port
            if any(needle in line.split()[1] + b" " and line.split()[3] == b"0A" for line in fh.readlines()[1:]):
                return
        time.sleep(0.05)
    raise TimeoutError(f"sipp does not listen on {port} after {timeout} s")


@contextlib.asynccontextmanager
async def tls_front(backend_port: int, cert: Path, key: Path) -> AsyncIterator[int]:
    """A TLS terminator on loopback in front of Kamailio's TCP port (Debian's Kamailio ships TLS in a
    separate package and its SIPp has no OpenSSL): the bridge's `sips:` client talks TLS to it, and it
    pipes the bytes to the PSAP. Yields its port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):  # ends when the peer closes; the test's deadline bounds it
                writer.write(data)
                await writer.drain()
        writer.close()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(10):
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(client, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        async with asyncio.timeout(5):
            await server.wait_closed()
