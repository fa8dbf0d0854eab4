"""Notifications to the person's own emergency contacts (family, carers, neighbours).

Queued by the pipeline in the same commit as the police contact, *after* it, as outbox rows of their own
(`msg_type = "notify"`): the forwarder delivers, retries and orders them like any contact, on a route per
recipient and channel (`notify:<channel>:<index>`), so a carer's unreachable mail server never holds up
the police contact or another carer. The text is rendered when the row is queued (a retry sends the same
words) in the contact's language, with no more than the person agreed to share.

Never for a silent or duress alert unless that contact opted in (`EmergencyContact.notify_silent`): the
person at risk may have been made to register the very person they are hiding from.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.core.ids import new_id
from bridge.core.model import ALWAYS_SILENT_KINDS, Alert, AlertKind, Device, EmergencyContact, Location
from bridge.store.base import Change, OutboxItem

log = logging.getLogger("sosbridge.notify")

SCHEMA_ID = "sosbridge.notification/1"
NOTIFY_ROUTE_PREFIX = "notify:"
NOTIFY_MSG_TYPE = "notify"
Channel = Literal["email", "sms", "webhook"]
NotifyEvent = Literal["alert", "ack", "resolve", "cancel"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "webhook")
SMS_MAX = 160
DEFAULT_MAP_URL = "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"


def is_notify_route(route: str) -> bool:
    return route.startswith(NOTIFY_ROUTE_PREFIX)


def channel_route(route: str) -> str:
    """`notify:email:2` → `notify:email`, the key of the channel's sink."""
    return ":".join(route.split(":")[:2])


# Noun phrases, without an article: they stand in a subject ("Alert: Morag - fall") and after a colon.
KIND_TEXT: dict[str, dict[AlertKind, str]] = {
    "en": {
        AlertKind.sos: "SOS alert",
        AlertKind.panic: "panic alarm",
        AlertKind.duress: "silent alarm",
        AlertKind.fall: "fall",
        AlertKind.no_movement: "no movement for a long time",
        AlertKind.medical: "medical emergency",
        AlertKind.fire: "fire or smoke alarm",
        AlertKind.check_in_missed: "missed check-in",
        AlertKind.device_offline: "alarm device offline",
        AlertKind.tamper: "alarm device tampered with",
        AlertKind.low_battery: "low battery on the alarm device",
        AlertKind.device_removed: "alarm device taken off",
        AlertKind.test: "test alert",
    },
    "de": {
        AlertKind.sos: "SOS-Alarm",
        AlertKind.panic: "Panikalarm",
        AlertKind.duress: "stiller Alarm",
        AlertKind.fall: "Sturz",
        AlertKind.no_movement: "lange keine Bewegung",
        AlertKind.medical: "medizinischer Notfall",
        AlertKind.fire: "Feuer- oder Rauchalarm",
        AlertKind.check_in_missed: "versäumter Check-in",
        AlertKind.device_offline: "Notrufgerät nicht erreichbar",
        AlertKind.tamper: "Manipulation am Notrufgerät",
        AlertKind.low_battery: "schwacher Akku am Notrufgerät",
        AlertKind.device_removed: "Notrufgerät abgelegt",
        AlertKind.test: "Testalarm",
    },
}

DEFAULT_TIME_ZONE = "Europe/London"

TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "someone": "the person you are an emergency contact for",
        "alert.subject": "{prefix}Alert: {who} - {kind}",
        "alert.body": "Alert for {who}: {kind}, at {time}. The police are being alerted.",
        "ack.subject": "{prefix}Help is on the way: {who}",
        "ack.body": "The police have acknowledged the alert for {who}: help is on the way.",
        "resolve.subject": "{prefix}Alert closed: {who}",
        "resolve.body": "The police have closed the alert for {who}.",
        "cancel.subject": "{prefix}Alert cancelled: {who}",
        "cancel.body": "The alert for {who} was cancelled at the alarm device.",
        "where": "Where: {place}",
        "grid": "OS grid reference {grid}",
        "coordinates": "{lat}° {ns}, {lon}° {ew}",
        "N": "N", "S": "S", "E": "E", "W": "W",
        "registered_address": "(registered address)",
        "last_known": "(last known position)",
        "accuracy": "(within about {m} m)",
        "map": "Map: {url}",
        "footer": "You receive this because {who} registered you as an emergency contact. "
        "Do not reply to this message. If you think someone is in danger, call 999 or 112.",
        "exercise": "[EXERCISE] ",
        "test": "[TEST] ",
    },
    "de": {
        "someone": "die Person, für die Sie Notfallkontakt sind",
        "alert.subject": "{prefix}Alarm: {who} - {kind}",
        "alert.body": "Alarm für {who}: {kind}, um {time}. Die Polizei wird alarmiert.",
        "ack.subject": "{prefix}Hilfe ist unterwegs: {who}",
        "ack.body": "Die Polizei hat den Alarm für {who} bestätigt: Hilfe ist unterwegs.",
        "resolve.subject": "{prefix}Alarm abgeschlossen: {who}",
        "resolve.body": "Die Polizei hat den Alarm für {who} abgeschlossen.",
        "cancel.subject": "{prefix}Alarm abgebrochen: {who}",
        "cancel.body": "Der Alarm für {who} wurde am Notrufgerät abgebrochen.",
        "where": "Ort: {place}",
        "grid": "britische Gitterreferenz (OS) {grid}",
        "coordinates": "{lat}° {ns}, {lon}° {ew}",
        "N": "N", "S": "S", "E": "O", "W": "W",
        "registered_address": "(hinterlegte Adresse)",
        "last_known": "(letzte bekannte Position)",
        "accuracy": "(auf etwa {m} m genau)",
        "map": "Karte: {url}",
        "footer": "Sie erhalten diese Nachricht, weil {who} Sie als Notfallkontakt angegeben hat. "
        "Bitte antworten Sie nicht auf diese Nachricht. Wenn Sie glauben, dass jemand in Gefahr ist, "
        "rufen Sie den Notruf 112 (in Großbritannien 999).",
        "exercise": "[ÜBUNG] ",
        "test": "[TEST] ",
    },
}


def local_time(at: datetime, zone: str | None) -> str:
    """`2026-11-29 21:40 GMT (Europe/London)`: the time in the person's zone, the zone named. Pure."""
    try:
        tz = ZoneInfo(zone or DEFAULT_TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo(DEFAULT_TIME_ZONE)
    local = at.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({tz.key})"


def coordinates(lat: float, lon: float, words: dict[str, str]) -> str:
    return words["coordinates"].format(lat=f"{abs(lat):.5f}", ns=words["N" if lat >= 0 else "S"],
                                       lon=f"{abs(lon):.5f}", ew=words["E" if lon >= 0 else "W"])


def template_language(tag: str | None) -> str:
    """The template for a BCP 47 tag: its primary subtag when there are templates for it, else English."""
    primary = (tag or "en").split("-")[0].split("_")[0].lower()
    return primary if primary in TEMPLATES else "en"


def may_notify(alert: Alert, contact: EmergencyContact) -> bool:
    """The silent-alert rule: a silent or duress alert (or one that became duress) reaches only a contact
    who explicitly opted in. Pure."""
    silent = alert.silent or alert.kind in ALWAYS_SILENT_KINDS or "duress" in (
        alert.attributes.get("escalation_kinds") or {}
    )
    if silent and not contact.notify_silent:
        return False
    return contact.wants(alert.kind)


def _where(location: Location | None, words: dict[str, str], map_url: str) -> list[str]:
    if location is None:
        return []
    parts: list[str] = []
    if location.grid_ref:
        parts.append(words["grid"].format(grid=location.grid_ref))
    elif location.civic is not None and location.civic.one_line():
        parts.append(location.civic.one_line())
    elif location.has_coordinates:  # outside Great Britain: no grid reference, so the coordinates
        assert location.lat is not None and location.lon is not None
        parts.append(coordinates(location.lat, location.lon, words))
    if location.accuracy_m is not None and location.has_coordinates:
        parts.append(words["accuracy"].format(m=round(location.accuracy_m)))
    if location.source in ("registered_address", "last_known"):
        parts.append(words[location.source])
    lines = [words["where"].format(place=" ".join(parts))] if parts else []
    if location.has_coordinates:
        lat, lon = f"{location.lat:.5f}", f"{location.lon:.5f}"
        lines.append(words["map"].format(url=map_url.format(lat=lat, lon=lon)))
    return lines


def render(
    alert: Alert, device: Device, contact: EmergencyContact, event: NotifyEvent, map_url: str = DEFAULT_MAP_URL
) -> tuple[str, str, str]:
    """(language, subject, text) of one notification. Pure."""
    person = device.person
    lang = template_language(contact.language or (person.language if person else None))
    words = TEMPLATES[lang]
    who = (person.name if person and person.name else None) or words["someone"]
    prefix = words.get(alert.status, "") if alert.status != "actual" else ""
    values = {
        "who": who,
        "kind": KIND_TEXT[lang][alert.kind],
        "time": local_time(alert.occurred_at, person.time_zone if person else None),
        "prefix": prefix,
    }
    subject = words[f"{event}.subject"].format(**values)
    lines = [words[f"{event}.body"].format(**values)]
    if event == "alert" and contact.share_location:
        lines.extend(_where(alert.location, words, map_url))
    lines.extend(["", words["footer"].format(who=who)])
    return lang, subject, "\n".join(lines)


_ASCII = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"})


def sms_text(subject: str, alert: Alert, contact: EmergencyContact, event: NotifyEvent) -> str:
    """One plain-ASCII text of at most 160 characters: the subject, and for a new alert where (grid
    reference and a map link) if the contact may be told. Pure."""
    parts = [subject + "."]
    loc = alert.location
    if event == "alert" and contact.share_location and loc is not None:
        if loc.grid_ref:
            parts.append(loc.grid_ref)
        if loc.has_coordinates:
            parts.append(f"https://www.openstreetmap.org/?mlat={loc.lat:.5f}&mlon={loc.lon:.5f}")
    text = unicodedata.normalize("NFKD", " ".join(parts).translate(_ASCII))
    return text.encode("ascii", "ignore").decode()[:SMS_MAX]


def sms_number(phone: str) -> str:
    """+44 (0)7700-900123 style numbers as the modem wants them: digits, an optional leading +."""
    digits = re.sub(r"\(0\)|[^0-9]", "", phone)
    return ("+" if phone.strip().startswith("+") else "") + digits


def route_for(channel: str, index: int) -> str:
    return f"{NOTIFY_ROUTE_PREFIX}{channel}:{index}"


@dataclass(frozen=True)
class Notification:
    channel: Channel
    index: int
    to: str
    payload: str


def notifications(
    alert: Alert,
    device: Device,
    event: NotifyEvent,
    channels: Iterable[str],
    map_url: str = DEFAULT_MAP_URL,
    only_routes: set[str] | None = None,
) -> list[Notification]:
    """What to send for this event, to whom, on which configured channels (and, given `only_routes`,
    only on those routes: a cancel goes only where the alert itself was delivered). Pure."""
    person = device.person
    if person is None or not person.emergency_contacts:
        return []
    available = set(channels)
    out: list[Notification] = []
    for index, contact in enumerate(person.emergency_contacts):
        if not may_notify(alert, contact):
            continue
        lang, subject, text = render(alert, device, contact, event, map_url)
        addresses: list[tuple[Channel, str | None]] = [
            ("email", contact.email),
            ("sms", sms_number(contact.phone) if contact.phone else None),
            ("webhook", contact.webhook_url),
        ]
        for channel, to in addresses:
            if to is None or channel not in available:
                continue
            if only_routes is not None and route_for(channel, index) not in only_routes:
                continue
            body = sms_text(subject, alert, contact, event) if channel == "sms" else text
            doc = {
                "schema": SCHEMA_ID,
                "notification_id": f"{alert.alert_id}:notify:{event}:{index}",
                "alert_id": alert.alert_id,
                "event": event,
                "channel": channel,
                "to": to,
                "contact_name": contact.name,
                "language": lang,
                "status": alert.status,
                "kind": alert.kind.value,
                "subject": subject,
                "text": body,
            }
            out.append(Notification(channel, index, to, json.dumps(doc, ensure_ascii=False)))
    return out


SmsSend = Callable[[str, str], Awaitable[None]]


class SmsUnavailable(RuntimeError):
    pass


class SmsGateway:
    """The GSM modems that may text emergency contacts. The serial adapter declares each GSM port when
    it starts (from then on SMS notifications are queued) and plugs in its sender while the modem is
    connected; a text queued while it is not waits in the outbox and is retried."""

    def __init__(self) -> None:
        self.declared = 0
        self._senders: list[SmsSend] = []

    def declare(self) -> None:
        self.declared += 1

    def connect(self, send: SmsSend) -> None:
        self._senders.append(send)

    def disconnect(self, send: SmsSend) -> None:
        if send in self._senders:
            self._senders.remove(send)

    async def send(self, number: str, text: str) -> None:
        if not self._senders:
            raise SmsUnavailable("no GSM modem connected")
        await self._senders[0](number, text)


class Notifier:
    """Queues notifications into a pipeline `Change`; `channels` are the ones with a sink configured
    (plus SMS once a GSM port is declared on `sms`)."""

    def __init__(self, channels: Iterable[str], map_url: str = DEFAULT_MAP_URL, sms: SmsGateway | None = None) -> None:
        self.static_channels = frozenset(channels)
        self.map_url = map_url
        self.sms = sms or SmsGateway()

    @property
    def channels(self) -> frozenset[str]:
        return self.static_channels | ({"sms"} if self.sms.declared else set())

    def queue(
        self, change: Change, device: Device, event: NotifyEvent, now: float, only_routes: set[str] | None = None
    ) -> int:
        """Append the rows after whatever the change already holds (the police contact comes first).
        Their seq is the alert version this change writes: later events of the alert order after earlier
        ones on each recipient's route."""
        alert = change.alert
        items = notifications(alert, device, event, self.channels, self.map_url, only_routes)
        for n in items:
            change.outbox.append(
                OutboxItem(
                    item_id=new_id(),
                    alert_id=alert.alert_id,
                    seq=alert.version + 1,
                    msg_type=NOTIFY_MSG_TYPE,
                    idempotency_key=f"{alert.alert_id}:notify:{event}:{n.index}",
                    payload=n.payload,
                    critical=False,
                    created_at=now,
                    route=route_for(n.channel, n.index),
                )
            )
        if items:
            log.info("emergency contact notifications queued", extra={"alert_id": alert.alert_id, "event": event,
                                                           "notifications": len(items)})
        return len(items)
