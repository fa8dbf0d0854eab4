"""SIA DC-09 end to end: real TCP and UDP on 127.0.0.1 → DC-09 receiver → ingress → reference receiver.

Vectors: pysiaalarm's test lines (tests/fixtures/dc09/pysiaalarm-lines.txt, see SOURCES.md there) sent
as they are, then their data blocks re-framed with a valid CRC, length and a current timestamp.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.core.model import Device, Location, Person
from device_adapters.decoders import dc09
from simulator.devices.dc09 import VirtualPanel
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.factories import store_outage
from tests.support.paths import FIXTURES
from tests.support.ports import free_port

LINES = [
    line.strip().encode()
    for line in (FIXTURES / "dc09" / "pysiaalarm-lines.txt").read_text().splitlines()
    if line.strip()
]
KEY = "AAAAAAAAAAAAAAAA"  # pysiaalarm tests/test_utils.py
KEY256 = "hex:" + "00112233445566778899aabbccddeeff" * 2
HOME = Location(lat=55.8642, lon=-4.2518, accuracy_m=20, source="fixed")


@dataclass
class Dc09Env:
    env: BridgeEnv
    port: int

    def rejected(self, reason: str) -> float:
        return float(self.env.bridge.runtime.metrics.rejected_count("dc09", reason))

    def panel(self, account: str, key: str | None = None, udp: bool = False) -> VirtualPanel:
        return VirtualPanel("127.0.0.1", self.port, account, key, udp=udp)

    async def register(self, device_id: str, account: str, key: str | None = None) -> None:
        await self.env.store.put_device(Device(
            device_id=device_id, profile_id="dc09-alarm-panel", identifiers={"dc09": account},
            person=Person(name="Test Keyholder", language="en-GB"), registered_address=HOME))
        if key:
            await self.env.store.set_credential(device_id, "dc09_key", key, hashed=False)

    async def contact(self, device_id: str, **match: Any) -> dict[str, Any]:
        return await self.env.receiver.first(
            lambda c: c["device"]["id"] == device_id and all(c.get(k) == v for k, v in match.items()), 10)


@pytest.fixture
async def dc09_env(tmp_path: Path) -> AsyncIterator[Dc09Env]:
    port = free_port()
    async with running_bridge(tmp_path, dc09_port=port) as env:
        yield Dc09Env(env, port)



async def test_pysiaalarm_lines_as_they_are(dc09_env: Dc09Env) -> None:
    await dc09_env.register("p-aaab", "AAAB", KEY)
    for account in ("123456", "12345A", "AAA", "006969"):
        await dc09_env.register(f"p-{account.lower()}", account)
    panel = dc09_env.panel("AAA")
    answers = [await panel.send(b"\n" + line + b"\r") for line in LINES]
    assert all(a is not None and a.token == "NAK" for a in answers)  # none is acknowledged ...
    assert all(a is not None and a.timestamp is not None for a in answers)  # ... each NAK carries our time
    # Eight declare a wrong length (see SOURCES.md); the one well-framed line, the encrypted NULL from
    # 2020, decrypts with the key but is far outside the -40/+20 s window.
    assert dc09_env.rejected("bad_length") == 8
    assert dc09_env.rejected("stale_timestamp") == 1
    assert not dc09_env.env.receiver.contacts


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
async def test_data_blocks_reframed(dc09_env: Dc09Env, udp: bool) -> None:
    await dc09_env.register("p-aaa", "AAA")
    await dc09_env.register("p-aaab", "AAAB", KEY)
    await dc09_env.register("p-12345a", "12345A")
    plain = dc09_env.panel("AAA", udp=udp)
    for data in ("Nri1/CL501", "Nri1/WA000", "Nri04/OP001NM"):  # closing, water, opening: not for the police
        answer = await plain.send(plain.message("SIA-DCS", data))
        assert answer is not None and answer.token == "ACK" and not answer.encrypted
    await dc09_env.register("p-006969", "006969")
    # pysiaalarm case_op as it is but for its length: the account only inside the data block, no timestamp.
    answer = await plain.send(dc09.frame_body('"SIA-DCS"4738R0001L0001[#006969|Nri04/OP001NM]'))
    assert answer is not None and answer.token == "ACK" and answer.raw.endswith(b'"ACK"4738R0001L0001#006969[]\r')
    assert dc09_env.env.bridge.runtime.metrics.unmatched_count("dc09-alarm-panel") == 4
    cid = dc09_env.panel("12345A", udp=udp)
    answer = await cid.send(cid.message("ADM-CID", "1110 00 129"))  # pysiaalarm case_adm_cid: fire, zone 129
    assert answer is not None and answer.token == "ACK"
    fire = await dc09_env.contact("p-12345a", kind="fire")
    assert fire["attributes"]["zone"] == "129" and fire["location"]["source"] == "registered_address"
    link = dc09_env.panel("AAAB", KEY, udp=udp)
    answer = await link.send(link.null())  # the encrypted NULL, dated now: a check-in, answered *ACK
    assert answer is not None and answer.token == "ACK" and answer.encrypted
    assert answer.timestamp is not None and abs((answer.timestamp - datetime.now(UTC)).total_seconds()) < 5
    device = await dc09_env.env.store.get_device("p-aaab")
    assert device is not None and device.last_seen is not None
    assert [c["device"]["id"] for c in dc09_env.env.receiver.contacts] == ["p-12345a"]


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
async def test_no_ack_while_the_store_fails(dc09_env: Dc09Env, udp: bool) -> None:
    await dc09_env.register("p-1", "1234", KEY)
    panel = dc09_env.panel("1234", KEY, udp=udp)
    message = panel.sia("PA", "501")
    with store_outage(dc09_env.env.store):
        assert await panel.send(message, timeout=1.0) is None  # nothing stored: no ACK, no NAK either
    assert not dc09_env.env.receiver.contacts
    answer = await panel.send(message)  # the panel repeats the same message
    assert answer is not None and answer.token == "ACK" and answer.encrypted
    contact = await dc09_env.contact("p-1", kind="panic")
    assert contact["silent"] is False and contact["attributes"]["code"] == "PA"
    assert (await panel.send(message)).token == "ACK"  # type: ignore[union-attr]  # repeated again: deduped
    await asyncio.sleep(0.3)
    assert len(dc09_env.env.receiver.contacts) == 1


async def test_each_refusal_is_nakked_and_counted(dc09_env: Dc09Env) -> None:
    await dc09_env.register("p-plain", "2222")
    await dc09_env.register("p-aes", "3333", KEY256)
    plain = dc09_env.panel("2222")
    good = plain.sia("PA")

    async def refused(raw: bytes, code: str) -> None:
        before = dc09_env.rejected(code)
        answer = await plain.send(raw)
        assert answer is not None and answer.token == "NAK", (code, answer)
        assert dc09_env.rejected(code) == before + 1

    corrupted = bytearray(good)
    corrupted[-4] ^= 0x01  # one bit of the timestamp: the CRC no longer matches
    await refused(bytes(corrupted), "bad_checksum")
    await refused(good[:7] + b"F" + good[8:], "bad_length")  # declared length changed (0LLL)
    await refused(plain.sia("PA", when=datetime.now(UTC) - timedelta(seconds=45)), "stale_timestamp")
    await refused(plain.sia("PA", when=datetime.now(UTC) + timedelta(seconds=25)), "stale_timestamp")
    await refused(dc09_env.panel("7777").sia("PA"), "unknown_device")
    aes = dc09_env.panel("3333", "hex:" + "ff" * 32)
    await refused(aes.sia("PA"), "bad_key")  # wrong AES-256 key
    await refused(dc09_env.panel("3333").sia("PA"), "bad_key")  # plain message for an encrypted account
    # Inside the window (-40/+20 s) is fine.
    for offset in (-35, 15):
        answer = await plain.send(plain.sia("BA", when=datetime.now(UTC) + timedelta(seconds=offset)))
        assert answer is not None and answer.token == "ACK"
    # Correctly framed but not a DC-09 data block we can process: DUH.
    answer = await plain.send(plain.message("ADM-CID", "this is not CID"))
    assert answer is not None and answer.token == "DUH"
    assert not dc09_env.env.receiver.contacts


async def test_silent_duress_over_udp_with_aes256_and_its_restore(dc09_env: Dc09Env) -> None:
    await dc09_env.register("p-hub", "4444", KEY256)
    hub = dc09_env.panel("4444", KEY256, udp=True)
    answer = await hub.send(hub.sia("HA", "003"))  # hold-up: silent duress
    assert answer is not None and answer.token == "ACK" and answer.encrypted
    alert = await dc09_env.contact("p-hub", kind="duress", msg_type="alert")
    assert alert["silent"] is True
    answer = await hub.send(hub.sia("HR", "003"))  # restore: an update, not a stand-down
    assert answer is not None and answer.token == "ACK"
    update = await dc09_env.contact("p-hub", msg_type="update")
    assert update["alert_id"] == alert["alert_id"] and update["silent"] is True
    answer = await hub.send(hub.cid("1", "101"))  # Contact ID in ADM-CID, encrypted: personal emergency
    assert answer is not None and answer.token == "ACK"
    # The duress alert is still open (a restore is not a stand-down): the SOS escalates it, silently.
    await dc09_env.env.receiver.wait_for(
        lambda cs: sum(c["device"]["id"] == "p-hub" and c["msg_type"] == "update" for c in cs) == 2, 10)
    escalation = [c for c in dc09_env.env.receiver.contacts if c["msg_type"] == "update"][-1]
    assert "sos" in str(escalation) and escalation["silent"] is True


def test_crc_of_pysiaalarm_lines() -> None:
    # The CRCs pysiaalarm's lines carry, recomputed (CRC-16/ARC over the message block).
    assert dc09.crc16(b'"SIA-DCS"6002L0#AAA[|Nri1/CL501]_14:12:04,09-25-2019') == 0xE5D5
    assert dc09.crc16(LINES[7][8:]) == 0x76D8


async def test_holdup_then_cancel_report_is_held(dc09_env: Dc09Env) -> None:
    """Issue 17 on SIA DC-09: a hold-up (HA, "user under duress") then a cancel report (OC) keyed at the
    panel: acknowledged to the panel as usual, an update to the platform, and the alert stays open."""
    from bridge.alerts.pipeline import DURESS_CANCEL_REASON

    await dc09_env.register("p-holdup", "ABC1")
    panel = dc09_env.panel("ABC1")
    answer = await panel.send(panel.message("SIA-DCS", "Nri1/HA001"))
    assert answer is not None and answer.token == "ACK"
    alarm = await dc09_env.contact("p-holdup", kind="duress")
    assert alarm["silent"] is True
    answer = await panel.send(panel.message("SIA-DCS", "Nri1/OC001"))
    assert answer is not None and answer.token == "ACK"
    update = await dc09_env.contact("p-holdup", msg_type="update")
    assert DURESS_CANCEL_REASON in update["reason"] and update["alert_id"] == alarm["alert_id"]
    alert = await dc09_env.env.store.get_alert(alarm["alert_id"])
    assert alert is not None and alert.is_open
    assert not any(c["msg_type"] == "cancel" for c in dc09_env.env.receiver.contacts)


async def test_a_cr_or_bracket_inside_the_text_never_splits_a_message(dc09_env: Dc09Env) -> None:
    """Framing by the length field (docs/transports/dc09.md): the panic report's SIA text holds a CR and
    a `]`; sent whole, then cut at the inner CR into two TCP writes, it is one message, ACKed once stored."""
    await dc09_env.register("p-aaa", "AAA")
    panel = dc09_env.panel("AAA")
    for n, text in enumerate(["^Hall] panic\r^", "^Bed\rroom]^"]):
        raw = panel.message("SIA-DCS", f"Nri1/PA50{n}{text}", seq=10 + n)
        inner = raw.index(b"\r")
        assert inner < len(raw) - 1
        reader, writer = await asyncio.open_connection("127.0.0.1", dc09_env.port)
        try:
            writer.write(raw[: inner + 1])  # up to and with the CR inside the text ...
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.write(raw[inner + 1 :])  # ... then the rest, as its own segment
            await writer.drain()
            answer = panel.read_answer(await asyncio.wait_for(reader.readuntil(b"\r"), 5))
        finally:
            writer.close()
        assert answer.token == "ACK"
        contact = await dc09_env.contact("p-aaa", kind="panic")
        assert contact["attributes"]["zone"] in {"500", "501"}
    assert dc09_env.rejected("bad_length") == 0 and dc09_env.rejected("malformed") == 0
