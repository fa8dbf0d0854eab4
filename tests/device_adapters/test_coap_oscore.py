"""OSCORE (RFC 8613) on the CoAP adapter, end to end over loopback: a virtual device with a real aiocoap
client-side security context → the bridge's aiocoap server (OSCORE site wrapper) → pipeline → receiver.

Replays are sent with a raw UDP socket from a fresh source port, byte for byte, so aiocoap's message-layer
de-duplication (same remote + message id) cannot be what refuses them: only OSCORE's replay window can.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
import pytest
from aiocoap import Code
from aiocoap.numbers import ContentFormat
from aiocoap.oscore import NotAProtectedMessage

from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from bridge.core.lifecycle import LifecycleEvent
from bridge.core.model import Device, Person
from device_adapters.coap.oscore import (
    DeviceSecurityContext,
    OscoreMaterial,
    register_oscore_device,
    write_context_dir,
)
from simulator.devices.coap import VirtualCoapDevice
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import bridge_settings
from tests.support.ports import free_port

DEVICE = "pendant-os"


def random_material() -> OscoreMaterial:
    # The bridge's view: it sends as "b1", the device sends as "d1" (the kid in the device's requests).
    return OscoreMaterial(
        sender_id="b1", recipient_id="d1", master_secret=secrets.token_hex(16), master_salt=secrets.token_hex(8)
    )


def test_context_derivation_matches_rfc8613_appendix_c_1(tmp_path: Path) -> None:
    # RFC 8613 Appendix C.1.1 (client) and C.1.2 (server): "Test Vector 1: Key Derivation with Master Salt".
    # Our credential is written from the bridge's side, i.e. the server's: Sender ID 0x01, Recipient ID 0x.
    server = OscoreMaterial(
        sender_id="01",
        recipient_id="",
        master_secret="0102030405060708090a0b0c0d0e0f10",
        master_salt="9e7ca92223786340",
    )
    write_context_dir(tmp_path / "server", server)
    write_context_dir(tmp_path / "client", server.reversed())
    srv = DeviceSecurityContext(str(tmp_path / "server"), "srv", "")
    cli = DeviceSecurityContext(str(tmp_path / "client"), "cli", "")
    try:
        assert cli.sender_key.hex() == "f0910ed7295e6ad4b54fc793154302ff"
        assert cli.recipient_key.hex() == "ffb14e093c94c9cac9471648b4f98710"
        assert cli.common_iv.hex() == "4622d4dd6d944168eefb54987c"
        assert srv.sender_key == cli.recipient_key and srv.recipient_key == cli.sender_key
    finally:
        srv.close()
        cli.close()
    with pytest.raises(ValueError):
        OscoreMaterial(sender_id="00" * 8, recipient_id="01", master_secret="00")  # 8-byte ID: too long


@dataclass
class OscoreEnv:
    rx: EmbeddedReceiver
    settings: Settings
    material: OscoreMaterial
    device: VirtualCoapDevice
    bridge: EmbeddedBridge | None = None

    def rejected(self, reason: str) -> float:
        assert self.bridge is not None
        return self.bridge.runtime.metrics.rejected_count("coap", reason)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[EmbeddedBridge]:
        async with EmbeddedBridge(self.settings) as eb:
            self.bridge = eb
            self.rx.receiver.bridge_url = eb.url
            yield eb

    async def contact(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        return await self.rx.first(pred, timeout)


@pytest.fixture
async def oscore_env(tmp_path: Path) -> AsyncIterator[OscoreEnv]:
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    port = free_port()
    async with EmbeddedReceiver(
        secret=secret, jsonl_path=tmp_path / "contacts.jsonl", platform_token=token, auto_ack_s=0.2
    ) as rx:
        settings = bridge_settings(tmp_path, rx.url, secret, token, coap_enabled=True, coap_port=port)
        material = random_material()
        device = VirtualCoapDevice("127.0.0.1", port, DEVICE, oscore=material, oscore_dir=tmp_path / "device-ctx")
        env = OscoreEnv(rx, settings, material, device)
        async with env.running() as eb:
            await eb.runtime.store.put_device(
                Device(device_id=DEVICE, profile_id="sosbridge-coap-device", person=Person(name="B"))
            )
            await register_oscore_device(eb.runtime.store, DEVICE, material)
        try:
            yield env
        finally:
            await device.close()


class RawOscoreClient:
    """Protects one request with a device-side context and exchanges it over a plain UDP socket."""

    def __init__(self, basedir: Path, material: OscoreMaterial, port: int) -> None:
        write_context_dir(basedir, material.reversed())
        self.ctx = DeviceSecurityContext(str(basedir), "raw", "")
        self.port = port

    def protect(self, inner: aiocoap.Message) -> tuple[bytes, Any]:
        outer, request_id = self.ctx.protect(inner)
        outer.mtype = aiocoap.CON
        outer.mid = secrets.randbelow(0xFFFF)
        outer.token = secrets.token_bytes(4)
        return outer.encode(), request_id

    async def exchange(self, datagram: bytes) -> aiocoap.Message:
        """Send from a fresh source port and return the (outer) response."""
        token = aiocoap.Message.decode(datagram).token

        def run() -> aiocoap.Message:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(datagram, ("127.0.0.1", self.port))
                while True:
                    data, _ = s.recvfrom(2048)
                    msg = aiocoap.Message.decode(data)
                    if msg.code != Code.EMPTY and msg.token == token:
                        return msg

        return await asyncio.to_thread(run)

    def close(self) -> None:
        self.ctx.close()


def alert_request(kind: str, message_id: str) -> aiocoap.Message:
    msg = aiocoap.Message(code=Code.POST, payload=cbor2.dumps({"kind": kind, "message_id": message_id}))
    msg.opt.uri_path = ("alert",)
    msg.opt.content_format = ContentFormat.CBOR
    return msg


async def test_oscore_alert_reaches_the_receiver_and_observe_works(oscore_env: OscoreEnv) -> None:
    env = oscore_env
    async with env.running() as eb:
        reply = await env.device.alert("fall", message_id="os-1", location={"lat": 55.95, "lon": -3.19})
        assert reply.code == Code.CREATED, reply.payload
        alert_id = reply.body["alert_id"]
        assert reply.location_path == ("alert", alert_id)
        # The request carried no HMAC query: only the OSCORE context can have authenticated it.
        assert env.device.sent[-1].opt.uri_query == ()
        stored = await eb.runtime.store.get_alert(alert_id)
        assert stored is not None and stored.device_id == DEVICE  # 2.01 came after storage
        contact = await env.contact(lambda c: c["alert_id"] == alert_id)
        assert contact["kind"] == "fall" and contact["device"]["id"] == DEVICE

        states: list[str] = []

        async def watch() -> None:
            async for doc in env.device.observe(alert_id):  # GET + Observe, OSCORE-protected
                states.append(doc["state"])
                if doc["state"] == "acknowledged":
                    return

        await asyncio.wait_for(watch(), 15)
        assert states[-1] == "acknowledged"

        cancelled = await env.device.cancel(alert_id)
        assert cancelled.code == Code.CHANGED and cancelled.body["state"] == "cancelled"


async def test_replay_wrong_key_and_unprotected_are_refused(oscore_env: OscoreEnv, tmp_path: Path) -> None:
    env = oscore_env
    port = env.settings.coap_port
    raw = RawOscoreClient(tmp_path / "raw-ctx", env.material, port)
    try:
        async with env.running() as eb:
            datagram, request_id = raw.protect(alert_request("sos", "replay-1"))
            first = await raw.exchange(datagram)
            assert first.code == Code.CHANGED  # OSCORE's outer code; the real one is inside
            inner, _ = raw.ctx.unprotect(first, request_id)
            assert inner.code == Code.CREATED
            alert_id = cbor2.loads(inner.payload)["alert_id"]
            history = await eb.runtime.store.history(alert_id)

            before = env.rejected("replay")
            replayed = await raw.exchange(datagram)  # byte for byte, new source port
            assert replayed.code == Code.UNAUTHORIZED and replayed.payload == b"Replay detected"
            assert env.rejected("replay") == before + 1
            # No escalation, nothing new from the device: only the forwarder's bookkeeping and the platform's
            # auto-ack may land meanwhile.
            ignored = {"forwarded", "delivered"} | {e.value for e in LifecycleEvent}
            after = [h for h in await eb.runtime.store.history(alert_id) if h.event not in ignored]
            assert after == [h for h in history if h.event not in ignored]

            # The same sequence number with a different request: also a replay for OSCORE.
            raw.ctx.sender_sequence_number -= 1
            reused, _ = raw.protect(alert_request("sos", "replay-2"))
            assert (await raw.exchange(reused)).code == Code.UNAUTHORIZED

            # The wrong master secret: RFC 8613 §8.2 says 4.00 when decryption fails (aiocoap follows it).
            wrong = env.material.model_copy(update={"master_secret": secrets.token_hex(16)})
            forger = RawOscoreClient(tmp_path / "forger-ctx", wrong, port)
            try:
                forged, _ = forger.protect(alert_request("sos", "forged"))
                refused = await forger.exchange(forged)
                assert refused.code == Code.BAD_REQUEST and b"Decryption failed" in refused.payload
            finally:
                forger.close()

            # An unknown kid (no device registered with it): 4.01.
            stranger = RawOscoreClient(
                tmp_path / "stranger-ctx", env.material.model_copy(update={"recipient_id": "ee"}), port
            )
            try:
                unknown, _ = stranger.protect(alert_request("sos", "stranger"))
                assert (await stranger.exchange(unknown)).code == Code.UNAUTHORIZED
            finally:
                stranger.close()

            # Neither OSCORE nor HMAC: 4.01.
            plain = aiocoap.Message(
                code=Code.POST, mtype=aiocoap.CON, mid=1, token=b"pl", payload=cbor2.dumps({"kind": "sos"})
            )
            plain.opt.uri_path = ("alert",)
            assert (await raw.exchange(plain.encode())).code == Code.UNAUTHORIZED
            assert env.rejected("bad_auth") >= 3

            open_alerts = [c for c in env.rx.contacts if c["msg_type"] == "alert"]
            assert {c["alert_id"] for c in open_alerts} == {alert_id}
    finally:
        raw.close()


async def test_replay_window_survives_a_bridge_restart(oscore_env: OscoreEnv, tmp_path: Path) -> None:
    env = oscore_env
    raw = RawOscoreClient(tmp_path / "raw-ctx", env.material, env.settings.coap_port)
    try:
        async with env.running():
            datagram, request_id = raw.protect(alert_request("sos", "restart-1"))
            inner, _ = raw.ctx.unprotect(await raw.exchange(datagram), request_id)
            assert inner.code == Code.CREATED
        # A clean stop wrote the replay window to <data_dir>/oscore/<device>/sequence.json.
        assert (Path(env.settings.data_dir) / "oscore" / DEVICE / "sequence.json").exists()
        async with env.running():
            replayed = await raw.exchange(datagram)
            assert replayed.code == Code.UNAUTHORIZED and replayed.payload == b"Replay detected"
            fresh, fresh_id = raw.protect(alert_request("sos", "restart-2"))
            inner2, _ = raw.ctx.unprotect(await raw.exchange(fresh), fresh_id)
            assert inner2.code == Code.CREATED
            assert cbor2.loads(inner2.payload)["outcome"] == "escalated"
    finally:
        raw.close()


async def test_simulator_scenario_sends_oscore_alerts(tmp_path: Path) -> None:
    from simulator.harness import stack_for
    from simulator.scenario import Scenario, register_devices, run_scenario

    material = random_material()
    scenario = Scenario.model_validate(
        {
            "name": "oscore",
            "timeout_s": 10,
            "devices": [
                {
                    "device_id": "coap-os",
                    "profile_id": "sosbridge-coap-device",
                    "identifiers": {"oscore_kid": material.recipient_id},
                    "credentials": {"oscore": material.model_dump_json()},
                }
            ],
            "steps": [
                {
                    "action": "coap.alert",
                    "device": "coap-os",
                    "args": {"kind": "fall", "oscore": True},
                    "await_expected": True,
                    "expect": [{"device": "coap-os", "kind": "fall"}],
                },
                # A second virtual-device instance must continue the sequence numbers, or OSCORE refuses it
                # as a replay and the action raises.
                {"action": "coap.alert", "device": "coap-os", "args": {"kind": "fall", "oscore": True}},
            ],
        }
    )
    async with stack_for(scenario, tmp_path) as stack:
        ctx = stack.run_context()
        await register_devices(scenario, ctx, stack.bridge.runtime.store)
        result = await run_scenario(scenario, ctx)
        alert = await stack.bridge.runtime.store.open_alert_for_device("coap-os")
    assert not result.missing, [m.describe() for m in result.missing]
    assert alert is not None and alert.transport == "coap"


async def test_after_a_crash_the_replay_window_is_recovered_with_echo(oscore_env: OscoreEnv, tmp_path: Path) -> None:
    env = oscore_env
    ctx_dir = Path(env.settings.data_dir) / "oscore" / DEVICE
    raw = RawOscoreClient(tmp_path / "raw-ctx", env.material, env.settings.coap_port)
    try:
        async with env.running():
            datagram, request_id = raw.protect(alert_request("sos", "crash-1"))
            inner, _ = raw.ctx.unprotect(await raw.exchange(datagram), request_id)
            assert inner.code == Code.CREATED
            # What a killed bridge leaves behind: aiocoap marks the window unknown on first use.
            crashed_state = (ctx_dir / "sequence.json").read_text()
            assert '"unknown"' in crashed_state
        (ctx_dir / "sequence.json").write_text(crashed_state)
        async with env.running():
            # The captured request cannot get through: the bridge asks for a fresh Echo instead (a
            # protected 4.01, so the outer code is 2.04) and submits nothing.
            echo_reply = await raw.exchange(datagram)
            inner_reply, _ = raw.ctx.unprotect(echo_reply, request_id)
            assert inner_reply.code == Code.UNAUTHORIZED and inner_reply.opt.echo
            assert len([c for c in env.rx.contacts if c["msg_type"] == "alert"]) == 1
            # A real aiocoap client answers the Echo by itself (RFC 8613 B.1.2) and gets through.
            reply = await env.device.alert("sos", message_id="crash-2")
            assert reply.code == Code.CREATED and reply.body["outcome"] == "escalated"
    finally:
        raw.close()


async def test_a_context_held_by_another_process_answers_5_03(oscore_env: OscoreEnv, tmp_path: Path) -> None:
    import sys

    env = oscore_env
    ctx_dir = Path(env.settings.data_dir) / "oscore" / DEVICE
    write_context_dir(ctx_dir, env.material)
    # Another bridge (or a copy of this one) using the same context directory holds its lock.
    code = (
        f"import filelock,sys; lock = filelock.FileLock({str(ctx_dir / 'lock')!r}); lock.acquire(); "
        "print('held', flush=True); sys.stdin.read()"
    )
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    raw = RawOscoreClient(tmp_path / "raw-ctx", env.material, env.settings.coap_port)
    try:
        assert holder.stdout is not None and (await holder.stdout.readline()).strip() == b"held"
        async with env.running():
            datagram, _ = raw.protect(alert_request("sos", "busy-1"))
            assert (await raw.exchange(datagram)).code == Code.SERVICE_UNAVAILABLE
            assert not env.rx.contacts
    finally:
        raw.close()
        holder.kill()
        await holder.wait()


async def test_a_revoked_credential_stops_working_at_once(oscore_env: OscoreEnv) -> None:
    env = oscore_env
    async with env.running() as eb:
        assert (await env.device.alert("sos", message_id="rv-1")).code == Code.CREATED
        device = await eb.runtime.store.get_device(DEVICE)
        assert device is not None
        device.identifiers.pop("oscore_kid")
        await eb.runtime.store.put_device(device)
        before = env.rejected("bad_auth")
        # aiocoap's client refuses to take the bridge's unprotected answer as a response; it carries it.
        with pytest.raises(NotAProtectedMessage) as refused:
            await env.device.alert("sos", message_id="rv-2")
        assert refused.value.plain_message.code == Code.UNAUTHORIZED
        assert env.rejected("bad_auth") == before + 1


async def test_oscore_is_built_by_the_first_protected_request(oscore_env: OscoreEnv, tmp_path: Path) -> None:
    """OSCORE (and the ~9 MB it imports) is loaded on demand: unprotected requests leave it unbuilt, and the
    first protected one builds it in time to be authenticated (device_adapters/coap/oscore_on_demand.py)."""
    env = oscore_env
    raw = RawOscoreClient(tmp_path / "raw-ctx", env.material, env.settings.coap_port)
    try:
        async with env.running() as eb:
            coap = next(a for a in eb.runtime.adapters if a.name == "coap")
            plain = aiocoap.Message(
                code=Code.POST, mtype=aiocoap.CON, mid=7, token=b"p7", payload=cbor2.dumps({"kind": "sos"})
            )
            plain.opt.uri_path = ("alert",)
            assert (await raw.exchange(plain.encode())).code == Code.UNAUTHORIZED
            assert coap.oscore is not None and coap.oscore.contexts is None  # not built for a plain request

            datagram, request_id = raw.protect(alert_request("panic", "on-demand-1"))
            first = await raw.exchange(datagram)
            inner, _ = raw.ctx.unprotect(first, request_id)
            assert inner.code == Code.CREATED, inner.payload
            assert coap.oscore.contexts is not None
            alert = await eb.runtime.store.get_alert(cbor2.loads(inner.payload)["alert_id"])
            assert alert is not None and alert.device_id == DEVICE
    finally:
        raw.close()
