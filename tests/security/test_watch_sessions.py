"""Issue 23 item 2: a watch's identity is the ID in its frames, so a second TCP connection naming a
registered watch must not take over its status channel, move its open alert or fake its check-ins; IDs
cannot be enumerated; an allow-list keeps other networks out; every contact says how its device was
authenticated and marks a location from an unauthenticated transport (docs/transports/watch.md).

Real listener on loopback, real virtual watches (simulator/devices/watch.py), real reference receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bridge.core.model import Device, Location, Person
from simulator.devices.watch import VirtualWatch
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.factories import until
from tests.support.ports import free_port

HOME = Location(lat=55.9486, lon=-3.1999, accuracy_m=10, source="fixed")
REAL = (55.9601, -3.1880)
FAKE = (51.5007, -0.1246)


@dataclass
class Env:
    env: BridgeEnv
    port: int

    def watch(self, watch_id: str) -> VirtualWatch:
        return VirtualWatch("127.0.0.1", self.port, watch_id)

    def rejected(self, reason: str) -> float:
        return float(self.env.bridge.runtime.metrics.rejected_count("watch", reason))

    async def register(self, device_id: str, watch_id: str) -> None:
        await self.env.store.put_device(Device(
            device_id=device_id, profile_id="watch-3g-protocol", identifiers={"watch": watch_id},
            person=Person(name="Test Wearer", language="en-GB"), registered_address=HOME))


@contextlib.asynccontextmanager
async def listener(tmp_path: Path, **settings: Any) -> AsyncIterator[Env]:
    port = free_port()
    async with running_bridge(tmp_path, auto_ack_s=None, watch_port=port, **settings) as env:
        yield Env(env, port)


async def silent(device: VirtualWatch, type_: str, wait: float = 0.5) -> bool:
    """True when the watch is sent no frame of this type within `wait` (connection still open)."""
    try:
        return await device.expect(type_, wait) is None
    except TimeoutError:
        return True


def near(loc: dict[str, Any] | None, where: tuple[float, float]) -> bool:
    return loc is not None and loc.get("lat") is not None and \
        abs(loc["lat"] - where[0]) < 1e-3 and abs(loc["lon"] - where[1]) < 1e-3


async def test_second_connection_cannot_take_the_status_channel_or_move_the_alert(tmp_path: Path) -> None:
    async with listener(tmp_path) as env:
        await env.register("w-1", "1111111111")
        real, attacker = env.watch("1111111111"), env.watch("1111111111")
        assert await real.alarm("sos", lat=REAL[0], lon=REAL[1]) is not None
        rx = env.env.receiver
        first = await rx.first(lambda c: c["device"]["id"] == "w-1", 10)
        assert near(first["location"], REAL)
        # The attacker's alarm is still raised (an SOS is never dropped) but cannot move the alert ...
        assert await attacker.alarm("fall", lat=FAKE[0], lon=FAKE[1]) is not None
        await rx.first(lambda c: c["device"]["id"] == "w-1" and c["msg_type"] == "update", 10)
        await attacker.position(lat=FAKE[0], lon=FAKE[1])
        assert await silent(attacker, "UD", 0.5)
        # ... and the platform's answer goes to the real watch, not to the attacker's socket.
        assert await rx.receiver.callback(first["alert_id"], "ack") == 200
        await real.wait_message("Help is on the way.")
        await asyncio.sleep(0.3)
        assert attacker.messages == []
        assert not any(near(c["location"], FAKE) for c in rx.contacts if c["device"]["id"] == "w-1")
        alert = await env.env.store.get_alert(first["alert_id"])
        assert alert is not None and near(alert.location.model_dump() if alert.location else None, REAL)
        device = await env.env.store.get_device("w-1")
        assert device is not None and not near(
            device.last_location.model_dump() if device.last_location else None, FAKE)
        assert env.rejected("session_held") >= 2
        await real.close()
        await attacker.close()


async def test_a_silent_session_is_taken_over_after_the_keepalive(tmp_path: Path) -> None:
    async with listener(tmp_path, watch_keepalive_s=1.0) as env:
        await env.register("w-2", "2222222222")
        old, new = env.watch("2222222222"), env.watch("2222222222")
        assert await old.link() is not None  # then a half-open connection: never closed, never heard again
        await asyncio.sleep(1.2)
        assert await new.link() is not None
        await new.position(lat=REAL[0], lon=REAL[1])

        async def moved() -> bool:
            device = await env.env.store.get_device("w-2")
            return device is not None and device.last_location is not None and \
                near(device.last_location.model_dump(), REAL)

        await until(moved, 5)
        await new.close()
        await old.close()


async def test_unknown_and_known_ids_get_the_same_answer(tmp_path: Path) -> None:
    async with listener(tmp_path) as env:
        await env.register("w-3", "3333333333")
        known, unknown = env.watch("3333333333"), env.watch("9999999999")
        answers = []
        for device in (known, unknown):
            reply = await device.link()
            assert reply is not None
            answers.append((reply.type, reply.content))
            assert await device.link() is not None  # and the connection stays up
        assert answers[0] == answers[1]
        assert env.rejected("unknown_device") >= 1
        await known.close()
        await unknown.close()


async def test_watch_allow_list_closes_other_networks(tmp_path: Path) -> None:
    async with listener(tmp_path, watch_allow="10.64.0.0/10") as env:
        await env.register("w-4", "4444444444")
        device = env.watch("4444444444")
        with contextlib.suppress(ConnectionError):  # closed at once: the write or the read may see a reset
            await device.send_raw(device.frame(b"LK,0,0,80"))
            assert await device.expect("LK", 5.0) is None  # closed, never answered
        assert env.rejected("not_allowed") == 1
    port = free_port()
    async with running_bridge(tmp_path / "b", watch_port=port, watch_allow="127.0.0.0/8") as env2:
        allowed = VirtualWatch("127.0.0.1", port, "4444444444")
        await env2.store.put_device(Device(device_id="w-4", profile_id="watch-3g-protocol",
                                           identifiers={"watch": "4444444444"}))
        assert await allowed.link() is not None
        await allowed.close()


async def test_every_contact_says_how_the_device_was_authenticated(tmp_path: Path) -> None:
    async with listener(tmp_path) as env:
        await env.register("w-5", "5555555555")
        device = env.watch("5555555555")
        assert await device.alarm("sos", lat=REAL[0], lon=REAL[1]) is not None
        rx = env.env.receiver
        contact = await rx.first(lambda c: c["device"]["id"] == "w-5", 10)
        assert contact["device"]["auth"] == "none"
        assert contact["location"]["authenticated"] is False
        await device.close()
        token = await env.env.add_device("h-1")
        async with httpx.AsyncClient(base_url=env.env.url, timeout=10) as client:
            r = await client.post("/v1/alerts", headers={"Authorization": f"Bearer {token}"},
                                  json={"kind": "fall", "message_id": "m-1",
                                        "location": {"lat": REAL[0], "lon": REAL[1], "accuracy_m": 5}})
            assert r.status_code == 202, r.text
        contact = await rx.first(lambda c: c["device"]["id"] == "h-1", 10)
        assert contact["device"]["auth"] == "token"
        assert contact["location"]["authenticated"] is True
