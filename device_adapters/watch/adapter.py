"""4G SOS watches over TCP, speaking the "3G" text protocol (device_adapters/decoders/watch.py).

One asyncio TCP server on `SOSBRIDGE_WATCH_PORT` (off unless set). Per connection, bytes are split into
frames by their declared length, so a `]` inside a field (a Wi-Fi name) never cuts a frame; a firmware
whose length is a few bytes off is framed at the `]` where it paused for GRACE_S (watch.split_frames). A
frame split across reads waits for its end; several frames in one read are each handled; the
frame's header names the watch (`Claim` with identifier `watch=<ID>`), the ingress decides, and the
answer the protocol expects is written from the Receipt only:

- `AL...` (alarm): `[MF*ID*0002*AL]` once the alert is stored, or the frame was understood and is not an
  alert (a geofence alarm, a repeat); never when it was refused or not stored, so the watch repeats the
  alarm or falls back to calling its SOS numbers. (Traccar answers before it stores.)
- `LK` (keep-alive): `[MF*ID*0002*LK]` once the check-in is recorded (supervision counts it).
- `TKQ`/`TKQ2` echoed and `INIT` answered `INIT,1`, as the protocol expects; they are not events.
- After an alarm stored without a valid fix, `CR` asks the watch to locate itself now; its `UD` answer
  updates the open alert's position.

A frame that does not parse is counted (`sosbridge_alerts_rejected{transport="watch"}`) and skipped: the
connection stays up. A connection silent for `SOSBRIDGE_WATCH_IDLE_S` is closed, one that has not sent a
whole frame within `SOSBRIDGE_LISTENER_FIRST_FRAME_S` too; a partial frame over MAX_FRAME bytes is dropped;
one source address holds at most `SOSBRIDGE_LISTENER_PER_SOURCE` connections, all sources MAX_CONNECTIONS;
with `SOSBRIDGE_WATCH_ALLOW` set, only those networks may connect (bridge/infra/listeners.py).

Sessions (the protocol has no credential: the ID in the frame is all there is; docs/transports/watch.md):
- A connection speaks for the first ID it names. The connection that names an ID first holds it as that
  watch's *session*: the status channel, check-ins (`LK`) and location reports (`UD`).
- A second connection naming an ID whose session was heard within `SOSBRIDGE_WATCH_KEEPALIVE_S` is
  *quarantined*: its alarms still raise (an SOS is never dropped) but without their position, and nothing
  else it sends is used; link frames get their usual answer so it learns nothing. Once the old session
  has been silent that long (or closed), the newcomer's next frame takes the session over.
- An ID that is not registered gets the same answers to link frames as a registered one (no enumeration);
  its alarm is not stored, so it gets no `AL` and falls back to calling its SOS numbers.
Every contact from a watch says `device.auth: "none"` and its location `authenticated: false`.

Status back to the watch: while it is connected, every state change of its alert (received, forwarded,
"Help is on the way", closed) is shown on its screen with the protocol's `MESSAGE` command (UTF-16BE
text, as Traccar's WatchProtocolEncoder sends it). Never for a silent alert: a duress alarm must not
light up the screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.core.model import utcnow
from bridge.devices.decoding import DecodeError, Frame
from bridge.infra.aio import stop_tasks
from bridge.infra.listeners import SourceGuard, host_of, parse_networks
from bridge.ingress import Claim, Receipt
from bridge.ingress.transport import BaseAdapter
from device_adapters.decoders import watch
from device_adapters.watch.settings import WatchSettings

if TYPE_CHECKING:
    from bridge.app.config import Settings
    from bridge.ingress.transport import AdapterContext

log = logging.getLogger("sosbridge.watch")

TRANSPORT = "watch"
READ_SIZE = 4096
GRACE_S = 0.5  # a frame whose declared length is off ends where the watch paused, after this long
MAX_CONNECTIONS = 10_000  # beyond this, a new connection is closed at once (counted: too_many_connections)


@dataclass(eq=False)
class WatchConnection:
    writer: asyncio.StreamWriter
    peer: str
    host: str = ""
    header: tuple[str, str, str | None] | None = None  # manufacturer, watch id, index: for commands
    device_id: str | None = None
    watch_id: str | None = None  # the one ID this connection speaks for (the first it named)
    last_heard: float = 0.0  # monotonic time of its last whole frame
    frames: int = 0
    closed: bool = False

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


def answer(frame: watch.WatchFrame, receipt: Receipt) -> bytes | None:
    """The protocol's answer to one frame, from the ingress's Receipt (None: say nothing). Pure."""
    if not receipt.acknowledge:
        return None  # not stored: silence makes the watch send it again
    if receipt.status == "refused":
        return None
    if watch.frame_type(frame.type) == "alarm":
        return watch.reply(frame, "AL")
    return link_answer(frame)


def link_answer(frame: watch.WatchFrame) -> bytes | None:
    """The answer a link frame gets whoever sent it (a registered, unknown or quarantined ID). Pure."""
    upper = frame.type.upper()
    if watch.frame_type(frame.type) == "link":
        return watch.reply(frame, "LK")
    if upper in ("TKQ", "TKQ2"):
        return watch.reply(frame, frame.type)
    if upper == "INIT":
        return watch.reply(frame, "INIT,1")
    return None


def session_holder(current: WatchConnection | None, newcomer: WatchConnection, now: float,
                   keepalive_s: float) -> bool:
    """Whether `newcomer` may hold the session of its ID, given the connection holding it now. Pure."""
    if current is None or current is newcomer or current.closed:
        return True
    return now - current.last_heard >= keepalive_s


def wants_fix(frame: watch.WatchFrame, receipt: Receipt) -> bool:
    """An alarm stored without a valid fix: ask the watch for a position now (`CR`, Traccar's
    positionSingle command) rather than wait for its next periodic report. Pure."""
    if receipt.status != "accepted" or watch.frame_type(frame.type) != "alarm":
        return False
    try:
        return watch.parse_content(frame).get("fix_valid") is False
    except DecodeError:
        return False


class WatchAdapter(BaseAdapter):
    name = "watch"
    transports = {"watch": frozenset({"watch_reply"})}

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port: int | None = None
        self.connections: set[WatchConnection] = set()
        self.by_device: dict[str, WatchConnection] = {}
        self.sessions: dict[str, WatchConnection] = {}  # watch ID -> the connection holding its session
        self._status_task: asyncio.Task[None] | None = None

    def enabled(self, settings: Settings) -> bool:
        return settings.section(WatchSettings).port is not None

    async def start(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        settings, own = ctx.settings, ctx.settings.section(WatchSettings)
        self.idle_s = own.idle_s
        self.keepalive_s = own.keepalive_s
        self.first_frame_s = settings.listener_first_frame_s
        self.guard = SourceGuard(settings.listener_per_source, parse_networks(own.allow))
        self.server = await asyncio.start_server(self._serve, own.host, own.port)
        self.port = self.server.sockets[0].getsockname()[1]
        self._status_task = asyncio.create_task(self._status_loop(), name="watch-status")
        log.info("watch listener started", extra={"host": own.host, "port": self.port})

    async def stop(self) -> None:
        if self._status_task is not None:
            await stop_tasks([self._status_task])
        if self.server is not None:
            self.server.close()
            for conn in list(self.connections):
                conn.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None

    # -- one connection ------------------------------------------------------------------------------
    def refuse(self, code: str, **extra: object) -> None:
        """Count a frame refused by the framing itself, before the ingress."""
        self.ctx.metrics.rejected(TRANSPORT, code)
        log.info("watch frame refused", extra={"reason": code, **extra})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer, host = str(peername), host_of(peername)
        if len(self.connections) >= MAX_CONNECTIONS:
            self.refuse("too_many_connections", peer=peer)
            writer.close()
            return
        if (why := self.guard.admit(host)) is not None:
            self.refuse(why, peer=peer)
            writer.close()
            return
        conn = WatchConnection(writer, peer, host)
        self.connections.add(conn)
        buffer = b""
        paused = False  # the grace time passed with a frame still open: its end is taken as sent
        first_by = time.monotonic() + self.first_frame_s
        try:
            while True:
                waiting = bool(buffer) and not paused
                wait = GRACE_S if waiting else self.idle_s
                if conn.frames == 0:
                    wait = min(wait, max(0.0, first_by - time.monotonic()))
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), wait)
                except TimeoutError:
                    if conn.frames == 0 and time.monotonic() >= first_by:
                        self.refuse("no_first_frame", peer=peer, first_frame_s=self.first_frame_s)
                        return
                    if waiting:
                        paused = True
                        buffer, alive = await self._frames(conn, buffer, final=True)
                        if not alive:
                            return
                        continue
                    log.info("idle watch connection closed", extra={"peer": peer, "idle_s": self.idle_s})
                    return
                if not data:
                    if buffer:
                        await self._frames(conn, buffer, final=True)
                    return
                paused = False
                buffer, alive = await self._frames(conn, buffer + data, final=False)
                if not alive:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            conn.closed = True
            self.guard.release(host)
            self.connections.discard(conn)
            if conn.device_id is not None and self.by_device.get(conn.device_id) is conn:
                del self.by_device[conn.device_id]
            if conn.watch_id is not None and self.sessions.get(conn.watch_id) is conn:
                del self.sessions[conn.watch_id]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _frames(self, conn: WatchConnection, buffer: bytes, *, final: bool) -> tuple[bytes, bool]:
        """Handle every complete frame in `buffer`: (what is left, whether the connection stays up)."""
        frames, rest, skipped = watch.split_frames(buffer, final=final)
        if skipped:
            self.refuse("malformed", peer=conn.peer, skipped_bytes=skipped)
        if not rest and len(buffer) > watch.MAX_FRAME and not frames:
            self.refuse("too_large", peer=conn.peer, size=len(buffer))
        for raw in frames:
            if not await self.handle(conn, raw):
                return rest, False
        return rest, True

    async def handle(self, conn: WatchConnection, raw: bytes) -> bool:
        """One frame: ingress, then the protocol's answer. False: close the connection."""
        try:
            frame = watch.parse_frame(raw, strict=False)
        except DecodeError as exc:
            self.refuse("malformed", peer=conn.peer, error=str(exc)[:100])
            return True  # one bad frame never closes a good connection
        if conn.watch_id is not None and frame.watch_id != conn.watch_id:
            self.refuse("identity_mismatch", peer=conn.peer)
            return True  # a connection speaks for one watch
        now = time.monotonic()
        conn.watch_id, conn.frames = frame.watch_id, conn.frames + 1
        holder = self.sessions.get(frame.watch_id)
        if session_holder(holder, conn, now, self.keepalive_s):
            if holder is not None and holder is not conn:
                holder.writer.close()  # silent longer than the keep-alive: the newcomer takes over
                log.info("watch session taken over after silence", extra={"peer": conn.peer})
            self.sessions[frame.watch_id] = conn
            conn.last_heard = now
            return await self._session_frame(conn, frame, raw)
        return await self._quarantined_frame(conn, frame, raw)

    async def _ingress(self, frame: watch.WatchFrame, raw: bytes, *, quarantined: bool) -> Receipt:
        claim = Claim(TRANSPORT, identifiers=(("watch", frame.watch_id),), label=f"watch {frame.watch_id!r}")
        meta = {"protocol": "watch", "received_at": utcnow().isoformat()}
        # A quarantined connection's alarm is raised without its position: it may not move the alert.
        overrides: dict[str, object] | None = {"location": None} if quarantined else None
        return await self.ctx.ingress.receive(Frame(payload=raw, meta=meta), claim,
                                              raw=raw.decode("utf-8", "replace"), overrides=overrides)

    async def _quarantined_frame(self, conn: WatchConnection, frame: watch.WatchFrame, raw: bytes) -> bool:
        """Another live connection holds this ID: its alarms are raised (never dropped), nothing else is
        used, and link frames get their usual answer."""
        self.refuse("session_held", peer=conn.peer, frame_type=frame.type[:12])
        if watch.frame_type(frame.type) == "alarm":
            receipt = await self._ingress(frame, raw, quarantined=True)
            reply = answer(frame, receipt)
        else:
            reply = link_answer(frame)
        if reply is not None:
            await conn.send(reply)
        return True

    async def _session_frame(self, conn: WatchConnection, frame: watch.WatchFrame, raw: bytes) -> bool:
        receipt = await self._ingress(frame, raw, quarantined=False)
        if receipt.status == "refused" and receipt.code == "unknown_device":
            # Counted by the ingress. The same answer a registered watch's link frame gets: no enumeration.
            if (reply := link_answer(frame)) is not None:
                await conn.send(reply)
            return True
        if receipt.device is not None and conn.header is None:
            conn.header = (frame.manufacturer, frame.watch_id, frame.index)
            conn.device_id = receipt.device.device_id
            self.by_device[conn.device_id] = conn
        if not frame.length_ok:
            log.info("watch frame length mismatch tolerated", extra={"status": receipt.status})
        log.info("watch frame handled", extra={"type": frame.type[:12], "status": receipt.status,
                                               "code": receipt.code,
                                               "alert_ids": [r.alert_id for r in receipt.results]})
        reply = answer(frame, receipt)
        if reply is not None:
            await conn.send(reply)
        if reply is not None and wants_fix(frame, receipt):
            await conn.send(watch.reply(frame, "CR"))  # "locate now": its UD answer updates the open alert
        return True

    # -- status back to the watch --------------------------------------------------------------------
    async def _status_loop(self) -> None:
        async with self.ctx.bus.subscribe() as queue:
            while True:
                event = await queue.get()  # a service loop's wait: stop() cancels it
                conn = self.by_device.get(event.device_id)
                if conn is None or conn.header is None or event.text is not None:
                    continue  # platform text messages are not shown on watches yet
                try:
                    alert = await self.ctx.store.get_alert(event.alert_id)
                    if alert is None or alert.silent:
                        continue  # never light up the screen of a silent (duress) alert
                    await conn.send(watch.message_command(conn.header, event.message))
                except Exception as exc:  # a watch gone mid-write must not stop the loop
                    log.info("watch status not sent", extra={"device_id": event.device_id,
                                                             "error": str(exc)[:100]})
