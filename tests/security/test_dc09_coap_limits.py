"""Issue 23 item 7: SIA DC-09 and CoAP. A plain (keyless) DC-09 account can be spoken for by anyone who
knows its number: registration and the start-up summary say so, and `SOSBRIDGE_DC09_PLAIN_ALLOW` limits
it to the panels' networks. An encrypted block is refused when replayed under a new clear-text sequence
number inside the timestamp window. Over UDP only a well-framed message is answered (no reflection). One
host cannot hold every CoAP Block1 assembly slot.

Real DC-09 receiver on loopback (TCP and UDP), real virtual panels, `sosbridge` subprocesses for the CLI.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.app.startup import summary_lines
from bridge.core.model import Device, Person
from bridge.infra.aio import wait_event
from device_adapters.decoders import dc09
from simulator.devices.dc09 import VirtualPanel
from tests.app.test_cli_config import run
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.ports import free_port

KEY = "0123456789abcdef"


def rejected(env: BridgeEnv, reason: str) -> float:
    return float(env.bridge.runtime.metrics.rejected_count("dc09", reason))


async def register(env: BridgeEnv, device_id: str, account: str, key: str | None = None) -> None:
    await env.store.put_device(Device(device_id=device_id, profile_id="dc09-alarm-panel",
                                      identifiers={"dc09": account}, person=Person(name="Keyholder")))
    if key:
        await env.store.set_credential(device_id, "dc09_key", key, hashed=False)


def resequenced(raw: bytes, sequence: str) -> bytes:
    """The same message, encrypted block and all, under another clear-text sequence number."""
    body = dc09.check_frame(raw)
    token_end = body.index('"', 1) + 1
    return dc09.frame_body(body[:token_end] + sequence + body[token_end + 4:])


async def test_an_encrypted_block_replayed_with_a_new_sequence_is_refused(tmp_path: Path) -> None:
    port = free_port()
    async with running_bridge(tmp_path, dc09_port=port) as env:
        await register(env, "p-1", "5555", KEY)
        panel = VirtualPanel("127.0.0.1", port, "5555", KEY)
        original = panel.cid("1", "130")
        first = await panel.send(original)
        assert first is not None and first.token == "ACK"
        again = await panel.send(original)  # the panel's own retry (same sequence): still acknowledged
        assert again is not None and again.token == "ACK"
        replay = await panel.send(resequenced(original, "0777"))
        assert replay is not None and replay.token == "NAK"
        assert rejected(env, "replay") == 1


async def test_udp_answers_only_well_framed_messages(tmp_path: Path) -> None:
    port = free_port()
    async with running_bridge(tmp_path, dc09_port=port) as env:
        await register(env, "p-2", "6666")
        panel = VirtualPanel("127.0.0.1", port, "6666", udp=True)
        loop = asyncio.get_running_loop()
        got: list[bytes] = []
        arrived = asyncio.Event()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                got.append(data)
                arrived.set()

        transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
        try:
            good = panel.sia("BA")
            corrupted = bytearray(good)
            corrupted[-4] ^= 0x01
            for noise in (b"", b"\r", b"x" * 40, bytes(corrupted)):
                transport.sendto(noise)
            await asyncio.sleep(0.5)
            assert got == []  # nothing reflected
            transport.sendto(good)
            assert await wait_event(arrived, 5)
            assert panel.read_answer(got[0]).token == "ACK"
        finally:
            transport.close()


async def test_plain_accounts_can_be_limited_to_source_networks(tmp_path: Path) -> None:
    port = free_port()
    async with running_bridge(tmp_path, dc09_port=port, dc09_plain_allow="10.20.0.0/16") as env:
        await register(env, "p-plain", "7777")
        await register(env, "p-aes", "8888", KEY)
        answer = await VirtualPanel("127.0.0.1", port, "7777").send(VirtualPanel("x", 0, "7777").cid("1", "400"))
        assert answer is not None and answer.token == "NAK"  # a cancel from outside the panels' network
        assert rejected(env, "plain_not_allowed") == 1
        keyed = VirtualPanel("127.0.0.1", port, "8888", KEY)
        answer = await keyed.send(keyed.sia("BA"))
        assert answer is not None and answer.token == "ACK"  # an account with a key is not limited


async def test_plain_accounts_are_named_at_registration_and_in_the_summary(tmp_path: Path) -> None:
    db = str(tmp_path / "bridge.db")
    done = run(tmp_path, "devices", "add", "panel-1", "--profile", "dc09-alarm-panel",
               "--identifier", "dc09=4321", SOSBRIDGE_DB=db, SOSBRIDGE_DATA_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "without an AES key" in done.stdout + done.stderr
    quiet = run(tmp_path, "devices", "add", "watch-1", "--identifier", "watch=1234567890",
                SOSBRIDGE_DB=db, SOSBRIDGE_DATA_DIR=str(tmp_path))
    assert quiet.returncode == 0 and "AES" not in quiet.stdout + quiet.stderr
    async with running_bridge(tmp_path, dc09_port=free_port(), db=db) as env:
        lines = await summary_lines(env.bridge.runtime)
        assert any("plain DC-09 account" in line and "panel-1" in line for line in lines), lines


async def test_one_host_cannot_hold_every_coap_block1_slot(tmp_path: Path) -> None:
    """CoAP Block1 (same item): 256 source ports of one host held every assembly slot for 93 s. Now one
    address has at most 8; another host still gets one."""
    import aiocoap
    from aiocoap import Code

    port = free_port()
    async with running_bridge(tmp_path, coap_enabled=True, coap_port=port) as env:
        def block(number: int) -> aiocoap.Message:
            msg = aiocoap.Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/alert", payload=b"x" * 64)
            msg.opt.block1 = aiocoap.optiontypes.BlockOption.BlockwiseTuple(number, True, 2)
            return msg

        clients = [await aiocoap.Context.create_client_context() for _ in range(10)]  # ten source ports
        other = await aiocoap.Context.create_server_context(None, bind=("127.0.0.2", 0))
        try:
            codes = [(await asyncio.wait_for(c.request(block(0), handle_blockwise=False).response, 10)).code
                     for c in clients]
            assert codes == [Code.CONTINUE] * 8 + [Code.SERVICE_UNAVAILABLE] * 2
            assert env.bridge.runtime.metrics.rejected_count("coap", "busy_source") == 2
            answer = await asyncio.wait_for(other.request(block(0), handle_blockwise=False).response, 10)
            assert answer.code == Code.CONTINUE
        finally:
            for c in [*clients, other]:
                await c.shutdown()
