"""The device kinds `sim load` plays beyond HTTP and MQTT, each over its real wire (docs/testing/simulator.md).

One sender per kind, all with the same contract: `async with sender:` opens what the kind needs (sockets,
a pty, a CoAP context), `await sender.send(device, message_id)` sends one alert the way the simulator's
virtual device of that kind does and returns True only when the bridge acknowledged it on the wire:

- `coap`: a confirmable POST /alert (CBOR), HMAC-signed with the device's `coap_hmac` key; 2.01 Created.
- `watch`: a 4G SOS watch (3G protocol over TCP, identifier `watch`), one connection per watch; the `AL` answer.
- `dc09`: an alarm panel (SIA DC-09 over TCP, identifier `dc09` = the account; AES with the device's
  `dc09_key`, else plain), event PA; `ACK`.
- `serial`: DIY buttons (identifier `diy_unit`) on one pty the sim creates at the bridge's serial path;
  the ACK byte. A serial line carries one frame at a time, so presses are sent one after another
  (`sequential`: the load loop awaits each).
- `alexa`: a HelpIntent envelope signed by the sim's speaker (`sim speaker DIR`) to POST /alexa
  (identifier `alexa_device`); the skill's answer carries the alert id.

Pure of counting: `simulator/load.py` schedules the sends, counts and matches contacts at the platform.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from bridge.core.model import AlertKind

KINDS = ("coap", "watch", "dc09", "serial", "alexa")
# The identifier each kind's device is known by on the bridge (None: the device id itself).
IDENTIFIER = {"coap": None, "watch": "watch", "dc09": "dc09", "serial": "diy_unit", "alexa": "alexa_device"}
PROFILES = {"coap": "sosbridge-coap-device", "watch": "watch-3g-protocol", "dc09": "dc09-alarm-panel",
            "serial": "sosbridge-diy-button", "alexa": None}
ANSWER_TIMEOUT_S = 10.0  # one alert's wire acknowledgement; longer means not acknowledged (counted refused)


@dataclass
class LoadDevice:
    """One device of a load run: its token (HTTP), identifiers (the other kinds) and keys (CoAP, DC-09)."""

    device_id: str
    token: str | None
    tenant_id: str = "default"
    identifiers: dict[str, str] = field(default_factory=dict)
    coap_key: str | None = None
    dc09_key: str | None = None


class Sender(Protocol):
    async def __aenter__(self) -> Sender: ...

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        ...

    async def prepare(self, devices: list[LoadDevice]) -> None: ...

    async def send(self, device: LoadDevice, message_id: str) -> bool: ...


def identifier(device: LoadDevice, kind: str) -> str:
    scheme = IDENTIFIER[kind]
    if scheme is None:
        return device.device_id
    value = device.identifiers.get(scheme)
    if not value:
        raise ValueError(f"{device.device_id} has no {scheme!r} identifier (--transport {kind} needs it)")
    return value


def load_identifiers(kind: str, index: int) -> dict[str, str]:
    """The identifiers the sim gives its n-th embedded device of a kind (unique within a run's devices)."""
    if kind == "watch":
        return {"watch": f"{9100000000 + index}"}
    if kind == "dc09":
        return {"dc09": f"{0xA0000 + index:X}"}
    if kind == "serial":
        return {"diy_unit": f"{0x5100000 + index:08X}"}
    if kind == "alexa":
        return {"alexa_device": f"amzn1.ask.device.load{index:05d}"}
    return {}


class _Base:
    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        return None

    async def prepare(self, devices: list[LoadDevice]) -> None:
        """Before the clock starts: wait for whatever the bridge needs to take the first alert."""
        return None


class CoapSender(_Base):
    """HMAC-signed CoAP alerts from one shared client context (one UDP socket for every device)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.context: Any = None

    async def __aenter__(self) -> CoapSender:
        import aiocoap

        self.context = await aiocoap.Context.create_client_context()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.context is not None:
            await asyncio.wait_for(self.context.shutdown(), 10)

    async def send(self, device: LoadDevice, message_id: str) -> bool:
        import cbor2
        from aiocoap import Code
        from aiocoap.numbers import ContentFormat

        from simulator.devices.coap import VirtualCoapDevice

        if not device.coap_key:
            raise ValueError(f"{device.device_id} has no CoAP key (--keys-file)")
        virtual = VirtualCoapDevice(self.host, self.port, device.device_id, device.coap_key, context=self.context)
        doc = {"kind": "sos", "message_id": message_id, "occurred_at": int(time.time())}
        # The counter must beat the last one the bridge accepted from this device, in any earlier run too.
        msg = virtual.build(Code.POST, "alert", cbor2.dumps(doc), ContentFormat.CBOR, counter=time.time_ns() // 1000)
        reply = await asyncio.wait_for(virtual.send(msg), ANSWER_TIMEOUT_S)
        return bool(reply.code == Code.CREATED)


class WatchSender(_Base):
    """Each watch dials in once (a TCP connection per watch, like the real ones) and raises an SOS alarm."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.watches: list[Any] = []

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await asyncio.wait_for(asyncio.gather(*(w.close() for w in self.watches), return_exceptions=True), 10)

    async def send(self, device: LoadDevice, message_id: str) -> bool:
        from simulator.devices.watch import VirtualWatch

        watch = VirtualWatch(self.host, self.port, identifier(device, "watch"))
        self.watches.append(watch)
        await asyncio.wait_for(watch.connect(), ANSWER_TIMEOUT_S)
        return await watch.alarm("sos", timeout=ANSWER_TIMEOUT_S) is not None


class Dc09Sender(_Base):
    """Each panel reports a panic alarm (SIA-DCS `PA`) on its own TCP connection; accepted on `ACK`."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def send(self, device: LoadDevice, message_id: str) -> bool:
        from simulator.devices.dc09 import VirtualPanel

        panel = VirtualPanel(self.host, self.port, identifier(device, "dc09"), key=device.dc09_key)
        answer = await asyncio.wait_for(panel.send(panel.sia("PA"), timeout=ANSWER_TIMEOUT_S), ANSWER_TIMEOUT_S + 5)
        return answer is not None and answer.token == "ACK"


class SerialSender(_Base):
    """DIY buttons on one pty at `path` (the bridge reads it as `diy=PATH`). The first press waits for the
    bridge to open the port (it retries every few seconds); presses then go one at a time."""

    LINK_WAIT_S = 20.0
    sequential = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port: Any = None
        self.boot = secrets.randbelow(200) + 2  # a fresh boot number per run: its presses are new alerts
        self.lock = asyncio.Lock()

    async def __aenter__(self) -> SerialSender:
        from simulator.devices.serial import VirtualSerialPort

        self.port = VirtualSerialPort(self.path)
        self.port.plug()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.port is not None:
            self.port.unplug()

    async def prepare(self, devices: list[LoadDevice]) -> None:
        """A heartbeat from the first button until the bridge answers: it has opened the port (it retries
        every few seconds), so the first press is not timed against the bridge's reopen backoff."""
        from device_adapters.decoders import diy_frame
        from simulator.devices.serial import VirtualDiyButton

        if not devices:
            return
        button = VirtualDiyButton(self.port, unit=int(identifier(devices[0], "serial"), 16), boot=self.boot)
        beat = diy_frame.encode(diy_frame.TYPE_HEARTBEAT, button.unit, self.boot, 0)
        try:
            await button.send_until_answered(beat, int(self.LINK_WAIT_S / 2), timeout=2.0)
        except TimeoutError:
            raise TimeoutError(f"the bridge did not answer on {self.path} within {self.LINK_WAIT_S:g} s") from None

    async def send(self, device: LoadDevice, message_id: str) -> bool:
        from simulator.devices.serial import VirtualDiyButton

        button = VirtualDiyButton(self.port, unit=int(identifier(device, "serial"), 16), boot=self.boot)
        async with self.lock:
            try:
                answer = await button.send_until_answered(button.frame(AlertKind.sos), 3, timeout=2.0)
            except TimeoutError:
                return False
            return answer[:1] == b"\x06"


class AlexaSender(_Base):
    """HelpIntent requests signed by the sim's smart speaker (saved by `sosbridge sim speaker DIR`)."""

    def __init__(self, bridge_url: str, speaker_dir: Path) -> None:
        self.bridge_url = bridge_url.rstrip("/")
        self.speaker_dir = speaker_dir
        self.speaker: Any = None
        self.client: Any = None

    async def __aenter__(self) -> AlexaSender:
        import httpx

        from simulator.devices.alexa import SmartSpeaker

        self.speaker = SmartSpeaker.load(self.speaker_dir)
        self.client = httpx.AsyncClient(timeout=ANSWER_TIMEOUT_S + 20)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def send(self, device: LoadDevice, message_id: str) -> bool:
        import httpx

        from skills.alexa.handlers import ALERT_ID_KEY

        envelope = self.speaker.envelope("HelpIntent", identifier(device, "alexa"))
        envelope["request"]["requestId"] = f"amzn1.echo-api.request.{message_id}"
        body, headers = self.speaker.sign(envelope)
        try:
            r = await self.client.post(f"{self.bridge_url}/alexa", content=body, headers=headers)
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            return False
        return bool((r.json().get("sessionAttributes") or {}).get(ALERT_ID_KEY))


def sender_for(kind: str, *, bridge_url: str | None, target: str | None, serial_path: Path | None,
               speaker_dir: Path | None) -> Sender:
    """The sender of a kind, or ValueError naming the option it is missing."""
    if kind in ("coap", "watch", "dc09"):
        if not target:
            raise ValueError(f"--transport {kind} needs --target HOST:PORT (the bridge's {kind} listener)")
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--target must be HOST:PORT, got {target!r}")
        if kind == "coap":
            return CoapSender(host, int(port))
        return WatchSender(host, int(port)) if kind == "watch" else Dc09Sender(host, int(port))
    if kind == "serial":
        if serial_path is None:
            raise ValueError("--transport serial needs --serial-path (the bridge's SOSBRIDGE_SERIAL_PORTS diy= path)")
        return SerialSender(serial_path)
    if kind == "alexa":
        if speaker_dir is None or bridge_url is None:
            raise ValueError("--transport alexa needs --speaker-dir (made by `sosbridge sim speaker`)")
        return AlexaSender(bridge_url, speaker_dir)
    raise ValueError(f"unknown device kind {kind!r}")
