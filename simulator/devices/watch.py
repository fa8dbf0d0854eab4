"""A virtual 4G SOS watch: a TCP client speaking the 3G protocol (device_adapters/decoders/watch.py).

It keeps one connection like a real watch, sends LK keep-alives, UD positions and AL alarms (SOS
button, fall, taken off the wrist), waits for the bridge's `[..*AL]` answer and collects the MESSAGE
texts the bridge shows on its screen. `replug()` drops the connection and dials in again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from device_adapters.decoders import watch
from simulator.scenario import RunContext, Step, action

STATUS_BITS = {"sos": 1 << 16, "fall": 1 << 21, "removal": 1 << 20, "low_battery": 1 << 0, "none": 0}


def position_content(
    type_: str,
    *,
    lat: float = 55.9533,
    lon: float = -3.1883,
    valid: bool = True,
    status: int = 0,
    battery: int = 80,
    when: datetime | None = None,
) -> bytes:
    """`TYPE,ddmmyy,hhmmss,A|V,lat,N|S,lon,E|W,speed,course,alt,sats,rssi,battery,steps,rolls,status,...`
    with the field order of the frames in Traccar's WatchProtocolDecoderTest."""
    when = when or datetime.now(UTC)
    fields = [
        type_, when.strftime("%d%m%y"), when.strftime("%H%M%S"), "A" if valid else "V",
        f"{abs(lat):.6f}", "N" if lat >= 0 else "S", f"{abs(lon):.6f}", "E" if lon >= 0 else "W",
        "0.00", "0.0", "0.0", "7", "100", str(battery), "0", "0", f"{status:08X}", "1", "255", "234", "15",
        "893", "3611", "135",
    ]  # fmt: skip
    return ",".join(fields).encode()


@dataclass
class VirtualWatch:
    host: str
    port: int
    watch_id: str
    manufacturer: str = "3G"
    index: str | None = None
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    inbox: list[watch.WatchFrame] = field(default_factory=list)  # frames from the bridge not yet taken
    messages: list[str] = field(default_factory=list)  # MESSAGE texts shown on the screen
    _buffer: bytes = b""

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None
        self._buffer = b""

    async def replug(self) -> None:
        """Battery out and in again: a new TCP connection, as after a reboot."""
        await self.close()
        await self.connect()

    def frame(self, content: bytes) -> bytes:
        return watch.build_frame(self.manufacturer, self.watch_id, content, self.index)

    async def send_raw(self, data: bytes) -> None:
        if self.writer is None:
            await self.connect()
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def _next_frame(self, timeout: float) -> watch.WatchFrame | None:
        assert self.reader is not None
        async with asyncio.timeout(timeout):
            while True:
                frames, self._buffer, _ = watch.split_frames(self._buffer)
                if frames:
                    self._buffer = b"".join(frames[1:]) + self._buffer
                    parsed = watch.parse_frame(frames[0])
                    if parsed.type == "MESSAGE":
                        text = bytes.fromhex(parsed.body).decode("utf-16-be")
                        self.messages.append(text)
                    return parsed
                data = await self.reader.read(4096)
                if not data:
                    return None
                self._buffer += data

    async def expect(self, type_: str, timeout: float = 5.0) -> watch.WatchFrame | None:
        """The bridge's next frame of this type (None: connection closed); raises TimeoutError."""
        for i, kept in enumerate(self.inbox):
            if kept.type == type_:
                return self.inbox.pop(i)
        while True:
            got = await self._next_frame(timeout)
            if got is None or got.type == type_:
                return got
            self.inbox.append(got)

    async def wait_message(self, text: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.messages:
                if await self._next_frame(timeout) is None:
                    raise ConnectionError("the bridge closed the connection")

    async def link(self, battery: int = 80, timeout: float = 5.0) -> watch.WatchFrame | None:
        await self.send_raw(self.frame(f"LK,0,0,{battery}".encode()))
        return await self.expect("LK", timeout)

    async def position(self, **kw: object) -> None:
        await self.send_raw(self.frame(position_content("UD", **kw)))  # type: ignore[arg-type]

    async def alarm(self, reason: str = "sos", timeout: float = 5.0, **kw: object) -> watch.WatchFrame | None:
        """An AL frame; returns the bridge's `AL` answer, or raises TimeoutError when there is none."""
        await self.send_raw(self.frame(position_content("AL", status=STATUS_BITS[reason], **kw)))  # type: ignore[arg-type]
        return await self.expect("AL", timeout)


def scenario_watch(ctx: RunContext, device_id: str) -> VirtualWatch:
    """The connected virtual watch of a scenario device (identifiers.watch); one per device per run."""
    key = f"watch:{device_id}"
    if key not in ctx.scratch:
        watch_id = ctx.devices[device_id].identifiers.get("watch")
        if watch_id is None:
            raise KeyError(f"{device_id} has no watch identifier in the scenario")
        ctx.scratch[key] = VirtualWatch(ctx.settings.watch_host, ctx.settings.watch_port, watch_id)
    found: VirtualWatch = ctx.scratch[key]
    return found


@action("watch.alarm")
async def _watch_alarm(ctx: RunContext, step: Step) -> None:
    """An AL frame from the device's watch: args `reason` (sos, fall, removal, low_battery), `lat`, `lon`,
    `valid`. Fails when the bridge does not answer `AL` (it answers only once the alert is stored)."""
    device = scenario_watch(ctx, step.device or "")
    args = dict(step.args)
    reply = await device.alarm(args.pop("reason", "sos"), **args)
    if reply is None:
        raise RuntimeError("the bridge closed the watch connection instead of answering AL")


@action("watch.link")
async def _watch_link(ctx: RunContext, step: Step) -> None:
    device = scenario_watch(ctx, step.device or "")
    if await device.link() is None:
        raise RuntimeError("the bridge closed the watch connection instead of answering LK")


@action("watch.replug")
async def _watch_replug(ctx: RunContext, step: Step) -> None:
    await scenario_watch(ctx, step.device or "").replug()
