"""The person's own emergency contacts: who is told what, by a real SMTP server (aiosmtpd) in-process, and
the police contact never waiting for them (issue 16, part 3)."""

from __future__ import annotations

import asyncio
import email
import json
import secrets
import time
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.alerts.emergency_contacts import notifications, render
from bridge.core.contact import build_contact
from bridge.core.model import AlertKind, Device, EmergencyContact, Location, Person
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.factories import make_alert, until
from tests.support.ports import free_port

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

HOME = Location(lat=55.9533, lon=-3.1883, accuracy_m=8, source="gnss", grid_ref="NT 25731 73617")


class Inbox:
    """aiosmtpd handler keeping every message it is handed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # the aiosmtpd hook name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]


class SmtpServer:
    def __init__(self, port: int) -> None:
        self.inbox = Inbox()
        self.controller = aiosmtpd_controller.Controller(self.inbox, hostname="127.0.0.1", port=port)

    def __enter__(self) -> Inbox:
        self.controller.start()
        return self.inbox

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def carers() -> list[EmergencyContact]:
    return [
        EmergencyContact(name="Ann", relation="daughter", email="ann@example.org", language="en-GB"),
        EmergencyContact(name="Bernd", relation="Nachbar", email="bernd@example.org", language="de",
                         notify_silent=True, share_location=False),
    ]


def device(contacts: list[EmergencyContact] | None = None) -> Device:
    person = Person(name="Morag", language="en-GB", emergency_contacts=carers() if contacts is None else contacts)
    return Device(device_id="w1", person=person)


def body(msg: Message) -> str:
    part = msg.get_payload(decode=True)
    assert isinstance(part, bytes)
    return part.decode(msg.get_content_charset() or "utf-8")


# -- pure rules -------------------------------------------------------------------------------------------
def test_rule_duress_nobody_silent_only_opted_in() -> None:
    everyone = notifications(make_alert("w1", kind=AlertKind.panic, silent=False), device(), "alert", ["email"])
    assert [n.to for n in everyone] == ["ann@example.org", "bernd@example.org"]
    silent = notifications(make_alert("w1", kind=AlertKind.panic, silent=True), device(), "alert", ["email"])
    assert [n.to for n in silent] == ["bernd@example.org"]
    # Duress: not even Bernd's opt-in is needed to be refused for Ann; with nobody opted in, nobody at all.
    nobody_opted = [c.model_copy(update={"notify_silent": False}) for c in carers()]
    duress = make_alert("w1", kind=AlertKind.duress, silent=True)
    assert notifications(duress, device(nobody_opted), "alert", ["email"]) == []
    for event in ("ack", "resolve"):
        assert notifications(duress, device(nobody_opted), event, ["email"]) == []  # type: ignore[arg-type]
    # An alert that became duress by escalation is treated as duress.
    escalated = make_alert("w1", kind=AlertKind.sos, silent=False, attributes={"escalation_kinds": {"duress": 1}})
    assert notifications(escalated, device(nobody_opted), "ack", ["email"]) == []


def test_kinds_channels_language_and_what_is_shared() -> None:
    alert = make_alert("w1", kind=AlertKind.fall, location=HOME)
    only_fire = [EmergencyContact(name="C", email="c@example.org", kinds=[AlertKind.fire])]
    assert notifications(alert, device(only_fire), "alert", ["email"]) == []
    assert notifications(alert, device(), "alert", ["webhook"]) == []  # no webhook URL given, SMTP not set up
    lang, subject, text = render(alert, device(), carers()[0], "alert")
    assert lang == "en" and subject == "Alert: Morag - fall"
    assert "NT 25731 73617" in text and "https://www.openstreetmap.org/?mlat=55.95330&mlon=-3.18830" in text
    lang, subject, text = render(alert, device(), carers()[1], "alert")
    assert lang == "de" and "Alarm für Morag: Sturz" in text and subject == "Alarm: Morag - Sturz"
    assert "NT" not in text and "openstreetmap" not in text  # Bernd was not to be told where
    exercise = make_alert("w1", kind=AlertKind.fall, status="exercise")
    assert render(exercise, device(), carers()[0], "ack")[1].startswith("[EXERCISE] Help is on the way")


T_WINTER = datetime(2026, 11, 29, 21, 40, 12, tzinfo=UTC)
T_SUMMER = datetime(2026, 7, 3, 6, 5, 0, tzinfo=UTC)
PARIS = Location(lat=48.858370, lon=2.294481, accuracy_m=15, source="gnss")
SYDNEY = Location(lat=-33.856784, lon=151.215297, accuracy_m=40, source="last_known")
PERTH_REGISTERED = Location(lat=56.3950, lon=-3.4310, accuracy_m=30, source="registered_address",
                            grid_ref="NO 11516 23547")
OSM = "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"

# (carer language, person's time zone, kind, when, where) -> the exact text a carer reads.
NOTIFICATION_TABLE = [
    ("en", None, AlertKind.fall, T_WINTER, HOME,
     "Alert: Morag - fall",
     ["Alert for Morag: fall, at 2026-11-29 21:40 GMT (Europe/London). The police are being alerted.",
      "Where: OS grid reference NT 25731 73617 (within about 8 m)",
      "Map: " + OSM.format(lat="55.95330", lon="-3.18830")]),
    ("en", None, AlertKind.sos, T_SUMMER, PERTH_REGISTERED,
     "Alert: Morag - SOS alert",
     ["Alert for Morag: SOS alert, at 2026-07-03 07:05 BST (Europe/London). The police are being alerted.",
      "Where: OS grid reference NO 11516 23547 (within about 30 m) (registered address)",
      "Map: " + OSM.format(lat="56.39500", lon="-3.43100")]),
    ("en", "Europe/Paris", AlertKind.medical, T_WINTER, PARIS,
     "Alert: Morag - medical emergency",
     ["Alert for Morag: medical emergency, at 2026-11-29 22:40 CET (Europe/Paris). The police are being alerted.",
      "Where: 48.85837° N, 2.29448° E (within about 15 m)",
      "Map: " + OSM.format(lat="48.85837", lon="2.29448")]),
    ("de", "Europe/Berlin", AlertKind.check_in_missed, T_SUMMER, PARIS,
     "Alarm: Morag - versäumter Check-in",
     ["Alarm für Morag: versäumter Check-in, um 2026-07-03 08:05 CEST (Europe/Berlin). Die Polizei wird alarmiert.",
      "Ort: 48.85837° N, 2.29448° O (auf etwa 15 m genau)",
      "Karte: " + OSM.format(lat="48.85837", lon="2.29448")]),
    ("de", "Australia/Sydney", AlertKind.no_movement, T_WINTER, SYDNEY,
     "Alarm: Morag - lange keine Bewegung",
     ["Alarm für Morag: lange keine Bewegung, um 2026-11-30 08:40 AEDT (Australia/Sydney). "
      "Die Polizei wird alarmiert.",
      "Ort: 33.85678° S, 151.21530° O (auf etwa 40 m genau) (letzte bekannte Position)",
      "Karte: " + OSM.format(lat="-33.85678", lon="151.21530")]),
]


@pytest.mark.parametrize(("lang", "zone", "kind", "when", "where", "subject", "lines"), NOTIFICATION_TABLE,
                         ids=[f"{r[0]}-{r[1] or 'default'}-{r[2].value}" for r in NOTIFICATION_TABLE])
def test_notification_table(lang: str, zone: str | None, kind: AlertKind, when: datetime, where: Location,
                            subject: str, lines: list[str]) -> None:
    person = Person(name="Morag", language="en-GB", time_zone=zone,
                    emergency_contacts=[EmergencyContact(name="C", email="c@example.org", language=lang)])
    alert = make_alert("w1", kind=kind, occurred_at=when, location=where)
    got_lang, got_subject, text = render(alert, Device(device_id="w1", person=person), person.emergency_contacts[0],
                                         "alert")
    assert (got_lang, got_subject) == (lang, subject)
    assert text.splitlines()[:len(lines)] == lines


def test_an_unknown_time_zone_is_refused_at_registration() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        Person(name="X", time_zone="Europe/Atlantis")


def test_police_contact_never_carries_the_emergency_contacts() -> None:
    contact = build_contact(make_alert("w1"), device(), "alert", 1, None, None)
    doc = json.loads(contact.to_json())
    assert doc["person"]["name"] == "Morag"
    assert "emergency_contacts" not in doc["person"] and "ann@example.org" not in contact.to_json()


# -- end to end: bridge, reference receiver, real SMTP server --------------------------------------------
async def post_alert(env: BridgeEnv, token: str, **fields: Any) -> str:
    async with httpx.AsyncClient(base_url=env.url) as c:
        r = await c.post("/v1/alerts", json=fields, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (200, 201, 202), r.text
        return str(r.json()["alert_id"])


def smtp_settings(port: int) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none", "smtp_from": "bridge@example.org"}


async def _all_delivered(rows: Any) -> bool:
    return {o.state for o in await rows} == {"delivered"}


async def test_alert_ack_and_resolve_reach_the_carers_by_email(tmp_path: Path) -> None:
    port = free_port()
    with SmtpServer(port) as inbox:
        async with running_bridge(tmp_path, auto_ack_s=None, **smtp_settings(port)) as env:
            token = await env.add_device("w1", person=device().person)
            alert_id = await post_alert(env, token, kind="fall", location={"lat": 55.9533, "lon": -3.1883})
            police = await env.receiver.first(lambda c: c["alert_id"] == alert_id)
            assert "emergency_contacts" not in police["person"]
            await until(lambda: len(inbox.messages) == 2)
            ann, bernd = inbox.to("ann@example.org")[0], inbox.to("bernd@example.org")[0]
            assert ann["From"] == "bridge@example.org" and ann["Content-Language"] == "en"
            assert "NT " in body(ann) and "openstreetmap.org/?mlat=55.95330&mlon=-3.18830" in body(ann)
            assert "Sturz" in body(bernd) and "openstreetmap" not in body(bernd)

            assert await env.receiver.receiver.callback(alert_id, "ack") == 200
            await until(lambda: len(inbox.messages) == 4)
            assert inbox.to("ann@example.org")[1]["Subject"] == "Help is on the way: Morag"
            assert "Hilfe ist unterwegs" in str(inbox.to("bernd@example.org")[1]["Subject"])
            assert await env.receiver.receiver.callback(alert_id, "resolve") == 200
            await until(lambda: len(inbox.messages) == 6)
            assert inbox.to("ann@example.org")[2]["Subject"] == "Alert closed: Morag"

            async def notify_rows() -> list[Any]:
                return [o for o in await env.store.outbox_items(alert_id) if o.route.startswith("notify:")]

            # The mail server has the message before the forwarder records its own 250: wait for that.
            await until(lambda: _all_delivered(notify_rows()))
            rows = await notify_rows()
            assert len(rows) == 6
            assert {o.route for o in rows} == {"notify:email:0", "notify:email:1"}


async def test_duress_notifies_nobody_and_silent_only_the_opted_in(tmp_path: Path) -> None:
    port = free_port()
    with SmtpServer(port) as inbox:
        async with running_bridge(tmp_path, auto_ack_s=0.05, **smtp_settings(port)) as env:
            token = await env.add_device("w1", person=device().person)
            # Bernd opted in to silent alerts; Ann did not. Duress: this device lists nobody opted in.
            nobody = Person(name="Morag", emergency_contacts=[c.model_copy(update={"notify_silent": False})
                                                             for c in carers()])
            duress_token = await env.add_device("w2", person=nobody)
            duress_id = await post_alert(env, duress_token, kind="duress")
            await env.receiver.first(lambda c: c["alert_id"] == duress_id)
            silent_id = await post_alert(env, token, kind="panic", silent=True)
            await env.receiver.first(lambda c: c["alert_id"] == silent_id)
            await until(lambda: len(inbox.to("bernd@example.org")) >= 1)
            await asyncio.sleep(0.5)  # the auto-acknowledgements' follow-ups, if any, have been sent by now
            assert inbox.to("ann@example.org") == []
            assert all("Morag" in str(m["Subject"]) for m in inbox.messages)
            # Provably nobody for the duress alert: not a single notification row was ever queued.
            assert [o for o in await env.store.outbox_items(duress_id) if o.route.startswith("notify:")] == []
            silent_rows = [o for o in await env.store.outbox_items(silent_id) if o.route.startswith("notify:")]
            assert silent_rows and {o.route for o in silent_rows} == {"notify:email:1"}


async def test_police_contact_is_delivered_while_the_mail_server_is_down(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    async with running_bridge(tmp_path, auto_ack_s=None, **smtp_settings(port)) as env:
        token = await env.add_device("w1", person=device().person)
        alert_id = await post_alert(env, token, kind="sos")
        await env.receiver.first(lambda c: c["alert_id"] == alert_id, timeout=5)

        async def notify_rows() -> list[Any]:
            return [o for o in await env.store.outbox_items(alert_id) if o.route.startswith("notify:")]

        deadline = asyncio.get_running_loop().time() + 10
        while not all(o.attempts >= 2 for o in await notify_rows()):
            assert asyncio.get_running_loop().time() < deadline, "notifications were not retried"
            await asyncio.sleep(0.05)
        alert = await env.store.get_alert(alert_id)
        assert alert is not None and alert.state.value == "forwarded"  # the platform has it; nothing held up
        assert {o.state for o in await notify_rows()} <= {"retry", "inflight", "pending"}
        with SmtpServer(port) as inbox:  # the mail server comes back: the retries deliver
            await until(lambda: len(inbox.messages) == 2)
            # The rows are marked delivered once the send returned (just after the server has the mail).
            deadline = asyncio.get_running_loop().time() + 10
            while {o.state for o in await notify_rows()} != {"delivered"}:
                assert asyncio.get_running_loop().time() < deadline, "delivered mail not recorded"
                await asyncio.sleep(0.05)


async def test_webhook_channel_and_registration_through_the_api(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None) as env:
        hook = f"{env.receiver.url.rsplit('/', 1)[0]}/carer-hook-{secrets.token_hex(4)}"
        doc = {"device_id": "w3", "person": {"name": "Iain", "emergency_contacts": [
            {"name": "Care team", "relation": "carer", "webhook_url": hook, "email": "team@example.org"}]}}
        async with httpx.AsyncClient(base_url=env.url) as c:
            r = await c.post("/v1/devices", json=doc, headers={"Authorization": f"Bearer {env.settings.admin_token}"})
            assert r.status_code == 201, r.text
            token = r.json()["token"]
        stored = await env.store.get_device("w3")
        assert stored.person.emergency_contacts[0].webhook_url == hook
        alert_id = await post_alert(env, token, kind="medical")
        await env.receiver.first(lambda c: c["alert_id"] == alert_id)
        rows = [o for o in await env.store.outbox_items(alert_id) if o.route.startswith("notify:")]
        # No SMTP server configured: only the webhook row, none for the e-mail address.
        assert [o.route for o in rows] == ["notify:webhook:0"]
        assert json.loads(rows[0].payload)["text"].startswith("Alert for Iain: medical emergency")


# -- registration: the command line and device files ------------------------------------------------------
def test_cli_registers_contacts_and_csv_keeps_them(tmp_path: Path) -> None:
    from tests.app.test_cli_config import assert_one_line_error, run

    ann = '{"name": "Ann", "relation": "daughter", "email": "ann@example.org", "language": "de"}'
    team = '{"name": "Care team", "webhook_url": "https://care.example.org/sos", "kinds": ["fall"]}'
    added = run(tmp_path, "devices", "add", "w1", "--name", "Morag", "--emergency-contact", ann,
                "--emergency-contact", team)
    assert added.returncode == 0, added.stderr
    exported = json.loads(run(tmp_path, "devices", "export").stdout)
    contacts = exported["person"]["emergency_contacts"]
    assert [c["name"] for c in contacts] == ["Ann", "Care team"]
    assert contacts[0]["notify_silent"] is False and contacts[0]["share_location"] is True
    assert contacts[1]["kinds"] == ["fall"]
    bad = run(tmp_path, "devices", "add", "w2", "--emergency-contact", '{"name": "X", "email": "not an address"}')
    assert_one_line_error(bad, "--emergency-contact #1", "email")
    # CSV: one JSON column; an export imports again unchanged.
    out = tmp_path / "export.csv"
    assert run(tmp_path, "devices", "export", str(out)).returncode == 0
    again = run(tmp_path, "devices", "import", str(out))
    assert again.returncode == 0 and "0 devices created, 0 updated, 1 unchanged" in again.stderr, again.stderr
    assert json.loads(run(tmp_path, "devices", "export").stdout)["person"] == exported["person"]


# -- SMS through the virtual GSM modem --------------------------------------------------------------------
async def test_sms_to_a_carer_through_the_gsm_modem(tmp_path: Path) -> None:
    from simulator.harness import virtual_serial_ports

    async with (
        virtual_serial_ports(tmp_path) as (spec, virtual),
        running_bridge(tmp_path, serial_ports=spec, auto_ack_s=None) as env,
    ):
        modem = virtual["gsm_modem"]
        adapter = next(a for a in env.bridge.runtime.adapters if a.name == "serial")
        gsm = next(h for h in adapter.handlers.values() if type(h).__name__ == "GsmHandler")
        await until(gsm.ready.is_set)
        carer = EmergencyContact(name="Jürgen", phone="+49 (0)151-2345 678", language="de")
        quiet = EmergencyContact(name="Q", phone="+447700900555", kinds=[AlertKind.fire])
        token = await env.add_device("w1", person=Person(name="Jörg", emergency_contacts=[carer, quiet]))
        alert_id = await post_alert(env, token, kind="medical", location={"lat": 55.9533, "lon": -3.1883})
        await env.receiver.first(lambda c: c["alert_id"] == alert_id)
        await until(lambda: len(modem.sent) == 1)
        number, text = modem.sent[0]
        assert number == "+491512345678"
        assert text.startswith("Alarm: Joerg - medizinischer Notfall. NT ") and len(text) <= 160
        assert "openstreetmap.org/?mlat=55.95330&mlon=-3.18830" in text
        assert await env.receiver.receiver.callback(alert_id, "resolve") == 200
        await until(lambda: len(modem.sent) == 2)
        assert modem.sent[1] == ("+491512345678", "Alarm abgeschlossen: Joerg.")
        await asyncio.sleep(0.3)
        assert all(n != "+447700900555" for n, _ in modem.sent)  # asked only about fires


async def test_a_cancel_is_told_only_to_those_who_were_told_of_the_alert(tmp_path: Path) -> None:
    port = free_port()
    with SmtpServer(port) as inbox:
        async with running_bridge(tmp_path, auto_ack_s=None, **smtp_settings(port)) as env:
            token = await env.add_device("w1", person=device().person)
            alert_id = await post_alert(env, token, kind="fall")
            await until(lambda: len(inbox.messages) == 2)
            async with httpx.AsyncClient(base_url=env.url) as c:
                r = await c.post(f"/v1/alerts/{alert_id}/cancel", json={"reason": "im_ok"},
                                 headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 202, r.text
            await until(lambda: len(inbox.messages) == 4)
            assert inbox.to("ann@example.org")[1]["Subject"] == "Alert cancelled: Morag"
            assert "am Notrufgerät abgebrochen" in body(inbox.to("bernd@example.org")[1])
            # An alert cancelled before its notifications went out: they are dropped, nothing follows.
            inbox.messages.clear()
            quiet_port = free_port()  # a second bridge whose mail server is unreachable
        async with running_bridge(tmp_path / "b", auto_ack_s=None, **smtp_settings(quiet_port)) as env:
            token = await env.add_device("w1", person=device().person)
            alert_id = await post_alert(env, token, kind="fall")
            await env.receiver.first(lambda c: c["alert_id"] == alert_id)
            async with httpx.AsyncClient(base_url=env.url) as c:
                r = await c.post(f"/v1/alerts/{alert_id}/cancel", json={"reason": "im_ok"},
                                 headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 202, r.text
            rows = [o for o in await env.store.outbox_items(alert_id) if o.route.startswith("notify:")]
            # Nothing was delivered, so no "cancelled" follows; what waited is dropped (one in flight at
            # that moment may still be retried: the cancel only drops rows waiting in the outbox).
            assert len(rows) == 2 and all(":notify:alert:" in o.idempotency_key for o in rows)
            assert {o.state for o in rows} <= {"cancelled", "inflight", "retry"}


async def test_a_hanging_mail_server_takes_no_worker_from_the_police(tmp_path: Path) -> None:
    async def blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never greets: every SMTP send hangs until its timeout
        writer.close()

    server = await asyncio.start_server(blackhole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    many = [EmergencyContact(name=f"C{i}", email=f"c{i}@example.org") for i in range(6)]
    try:
        async with running_bridge(tmp_path, auto_ack_s=None, forwarder_workers=2, smtp_timeout_s=5,
                                  **smtp_settings(port)) as env:
            token = await env.add_device("w1", person=Person(name="Morag", emergency_contacts=many))
            other = await env.add_device("w2")
            first = await post_alert(env, token, kind="fall")
            await env.receiver.first(lambda c: c["alert_id"] == first, timeout=2)

            async def hanging() -> int:
                rows = await env.store.outbox_items(first)
                return sum(o.route.startswith("notify:") and o.state == "inflight" for o in rows)

            deadline = asyncio.get_running_loop().time() + 3
            while await hanging() < 3:  # more notifications stuck than the forwarder has workers
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            started = loop.time()
            second = await post_alert(env, other, kind="sos")
            await env.receiver.first(lambda c: c["alert_id"] == second, timeout=2)
            assert loop.time() - started < 1.0
    finally:
        server.close()


async def test_a_notification_hours_late_is_given_up_not_sent() -> None:
    from bridge.alerts.emergency_contacts import SmsGateway
    from bridge.delivery.sinks.base import Permanent
    from bridge.delivery.sinks.notify import SmsSink
    from tests.support.factories import make_item

    sent: list[tuple[str, str]] = []

    async def send(number: str, text: str) -> None:
        sent.append((number, text))

    gateway = SmsGateway()
    gateway.connect(send)
    sink = SmsSink(gateway, max_age_s=3600)
    item = make_item(make_alert("w1"), 1, critical=False, route="notify:sms:0", at=time.time() - 3601)
    item.payload = json.dumps({"to": "+447700900555", "text": "Alert: Morag - a fall."})
    outcome = await sink.deliver(item)
    assert isinstance(outcome, Permanent) and "given up" in outcome.reason and sent == []
    item.created_at = time.time()
    assert type(await sink.deliver(item)).__name__ == "Delivered"
    assert sent == [("+447700900555", "Alert: Morag - a fall.")]
