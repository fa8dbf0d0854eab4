"""Sinks for notifications to emergency contacts (bridge/alerts/emergency_contacts.py): e-mail over SMTP, SMS through a
connected GSM modem, and a plain webhook.

The row's payload already holds the rendered text and the address, so these only transport it. The
standard library's `smtplib` runs in the sink's own threads; a refused recipient (5xx) is permanent, anything
else (server down, timeout, 4xx) is retried by the forwarder. Errors never carry the address.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

from bridge.alerts.emergency_contacts import SmsGateway
from bridge.delivery.sinks.base import Delivered, Outcome, Permanent, Retry, Sink
from bridge.delivery.sinks.outbound import AddressRefused, refused_literal
from bridge.delivery.sinks.signing import IDEMPOTENCY_HEADER
from bridge.delivery.sinks.webhook import classify
from bridge.infra.listeners import Network, parse_networks
from bridge.store.base import OutboxItem

if TYPE_CHECKING:
    import aiohttp

DEFAULT_MAX_AGE_S = 6 * 3600.0


def too_old(item: OutboxItem, max_age_s: float) -> Permanent | None:
    """A notification still undelivered after `max_age_s` is given up: "a fall" hours late only alarms."""
    if item.created_at and time.time() - item.created_at > max_age_s:
        return Permanent(f"notification older than {max_age_s:.0f} s, given up")
    return None


def _payload(item: OutboxItem) -> dict[str, Any] | None:
    try:
        doc = json.loads(item.payload)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("to"), str) else None


def deliverable(item: OutboxItem, max_age_s: float) -> dict[str, Any] | Permanent:
    """The notification to send, or why it never will be (not one, or given up as too old)."""
    doc = _payload(item)
    if doc is None:
        return Permanent("not a notification payload")
    return too_old(item, max_age_s) or doc


class SmtpSink:
    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        sender: str = "sosbridge@localhost",
        timeout_s: float = 10.0,
        name: str = "smtp",
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        self.name = name
        self.max_age_s = max_age_s
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.sender = sender
        self.timeout_s = timeout_s
        # Its own threads: a hanging mail server must not hold the default executor, which the fallback
        # spool of critical police contacts writes through.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="smtp")

    def message(self, item: OutboxItem, doc: dict[str, Any]) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = doc["to"]
        msg["Subject"] = str(doc.get("subject") or "SOS Bridge")
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        msg["Auto-Submitted"] = "auto-generated"
        msg[IDEMPOTENCY_HEADER] = item.idempotency_key
        msg.set_content(str(doc.get("text") or ""))
        msg["Content-Language"] = str(doc.get("language") or "en")  # after set_content, which drops Content-*
        return msg

    def _send(self, msg: EmailMessage) -> None:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if self.security == "tls":
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        with client:
            if self.security == "starttls":
                client.starttls(context=context)
            if self.username:
                client.login(self.username, self.password or "")
            client.send_message(msg)

    async def deliver(self, item: OutboxItem) -> Outcome:
        doc = deliverable(item, self.max_age_s)
        if isinstance(doc, Permanent):
            return doc
        msg = self.message(item, doc)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._send, msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(500 <= code < 600 for code in codes):
                return Permanent(f"SMTP recipient refused ({codes[0]})")
            return Retry(f"SMTP recipient deferred ({codes[0] if codes else '?'})")
        except smtplib.SMTPResponseException as exc:
            return Retry(f"SMTP {exc.smtp_code}")
        except (smtplib.SMTPException, OSError) as exc:
            return Retry(f"SMTP {type(exc).__name__}"[:300])
        return Delivered(250)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class NotifyWebhookSink:
    """POSTs the notification (JSON) to the contact's own webhook URL, e.g. a care service's system. Never
    to the bridge's own networks unless `allow` names them (bridge/delivery/sinks/outbound.py): a refused
    destination is permanent, and its reason never names the address."""

    def __init__(self, timeout_s: float = 10.0, name: str = "notify-webhook",
                 max_age_s: float = DEFAULT_MAX_AGE_S, allow: tuple[Network, ...] = ()) -> None:
        self.name = name
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self.allow = allow
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, item: OutboxItem) -> Outcome:
        doc = deliverable(item, self.max_age_s)
        if isinstance(doc, Permanent):
            return doc
        if (why := refused_literal(doc["to"], self.allow)) is not None:
            return Permanent(f"webhook destination refused ({why})")
        import aiohttp  # on first use: a bridge whose contacts have no webhook never loads it (issue 27)

        from bridge.delivery.sinks.guarded_resolver import GuardedResolver

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.allow), use_dns_cache=False)
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  connector=connector, trust_env=False)
        body = {k: v for k, v in doc.items() if k != "to"}
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: item.idempotency_key}
        try:
            async with self._session.post(doc["to"], data=json.dumps(body, ensure_ascii=False).encode(),
                                          headers=headers, allow_redirects=False) as response:
                await response.read()
                return classify(response.status, response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return Permanent(f"webhook destination refused ({exc.os_error.why})")
            return Retry(f"{type(exc).__name__}"[:300])
        except AddressRefused as exc:
            return Permanent(f"webhook destination refused ({exc.why})")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Retry(f"{type(exc).__name__}"[:300])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class SmsSink:
    """Texts the notification through a connected GSM modem (bridge.alerts.emergency_contacts.SmsGateway)."""

    def __init__(self, gateway: SmsGateway, name: str = "notify-sms", max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        self.name = name
        self.max_age_s = max_age_s
        self.gateway = gateway

    async def deliver(self, item: OutboxItem) -> Outcome:
        doc = deliverable(item, self.max_age_s)
        if isinstance(doc, Permanent):
            return doc
        try:
            await self.gateway.send(doc["to"], str(doc.get("text") or ""))
        except Exception as exc:  # no modem, ModemError, LinkLost: their texts never name the number
            return Retry(f"SMS {type(exc).__name__}: {exc}"[:200])
        return Delivered(200)

    async def close(self) -> None:
        return None


def notification_sinks(settings: Any, gateway: SmsGateway | None = None) -> dict[str, Sink]:
    """The channels' sinks, keyed by their route family (`notify:email`, `notify:webhook`): e-mail only
    when an SMTP server is configured."""
    max_age = settings.notify_max_age_s
    allow = parse_networks(settings.notify_webhook_allow)
    sinks: dict[str, Sink] = {"notify:webhook": NotifyWebhookSink(settings.platform_timeout_s, max_age_s=max_age,
                                                                  allow=allow)}
    if gateway is not None:
        sinks["notify:sms"] = SmsSink(gateway, max_age_s=max_age)
    if settings.smtp_host:
        sinks["notify:email"] = SmtpSink(
            settings.smtp_host,
            settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            sender=settings.smtp_from,
            timeout_s=settings.smtp_timeout_s,
            max_age_s=max_age,
        )
    return sinks
