"""Reply texts: a GSM tracker's owner often has no other way to know the alert got through.

When the alert raised by a tracker's text changes state, the GSM port texts the state back to the
tracker's number (`AT+CMGS`): "Your alert has been sent to the police.", "Help is on the way." once the
platform acknowledged it, and the closing message. Only for devices whose record says so
(`Device.sms_replies`) and that have an `msisdn`; never for a silent alert or a duress kind (a text
arriving on the phone could give the caller away). Each state is texted at most once per alert,
at most `burst` texts per device then one a minute, and a failed send is retried with back-off. Logs
name the device and the alert, never the number.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Protocol

from bridge.core.events import StatusEvent
from bridge.core.lifecycle import DEVICE_MESSAGES
from bridge.core.messages import MESSAGE_DELIVERY
from bridge.core.model import ALWAYS_SILENT_KINDS, Alert, AlertState, Device, HistoryEntry, utcnow
from bridge.infra.ratelimit import TokenBuckets

if TYPE_CHECKING:
    from bridge.ingress.transport import AdapterContext
    from device_adapters.serial.link import Connection


class SmsSender(Protocol):
    """What the replier needs of the modem's handler (device_adapters/serial/gsm.py's `GsmHandler`)."""

    @property
    def ctx(self) -> AdapterContext: ...

    async def send_sms(self, conn: Connection, number: str, text: str) -> None: ...

log = logging.getLogger("sosbridge.serial")

REPLY_STATES = frozenset({AlertState.forwarded, AlertState.acknowledged, AlertState.resolved, AlertState.cancelled})
_NUMBER = re.compile(r"^\+?[0-9]{3,20}$")


def reply_text(device: Device | None, alert: Alert | None, state: AlertState) -> str | None:
    """The text to send for this state change, or None when nothing may be sent. Pure."""
    if device is None or alert is None or not device.sms_replies:
        return None
    if not _NUMBER.match(device.identifiers.get("msisdn", "")):
        return None
    if alert.silent or alert.kind in ALWAYS_SILENT_KINDS:
        return None
    if state not in REPLY_STATES:
        return None
    return DEVICE_MESSAGES[state]


def sms_parts(text: str, limit: int = 160) -> list[str]:
    """A platform message as texts of at most `limit` characters, numbered "(1/3) " when it needs several.
    Pure."""
    if len(text) <= limit:
        return [text]
    size = limit - 8  # room for "(nn/nn) "
    chunks = [text[i:i + size] for i in range(0, len(text), size)]
    return [f"({n}/{len(chunks)}) {chunk}" for n, chunk in enumerate(chunks, 1)]


class SmsReplier:
    def __init__(self, handler: SmsSender, *, burst: int = 4, per_min: float = 1.0, attempts: int = 3,
                 backoff_s: float = 1.0) -> None:
        self.handler = handler
        self.limiter = TokenBuckets(burst, per_min / 60)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sent: set[tuple[str, AlertState]] = set()

    async def run(self, conn: Connection) -> None:
        async with self.handler.ctx.bus.subscribe() as queue:
            while True:
                event = await queue.get()  # a service loop's wait: stop() cancels it
                try:
                    await self.consider(conn, event)
                except Exception as exc:  # one failed lookup must not stop the replies
                    log.warning("sms reply skipped", extra={"device_id": event.device_id, "error": str(exc)[:100]})

    async def text(self, conn: Connection, event: StatusEvent) -> bool:
        """A platform message texted to a tracker that allows replies: never on a discreet (silent or duress)
        alert unless the platform asked for it and the device record allows it (`event.text.audible`, decided
        by the pipeline). Not rate-limited: only the authenticated platform sends these."""
        message = event.text
        if message is None or (message.discreet and not message.audible):
            return False
        store = self.handler.ctx.store
        device = await store.get_device(event.device_id)
        if device is None or not device.sms_replies or not _NUMBER.match(device.identifiers.get("msisdn", "")):
            return False
        for part in sms_parts(message.text):
            for attempt in range(1, self.attempts + 1):
                try:
                    await self.handler.send_sms(conn, device.identifiers["msisdn"], part)
                    break
                except Exception as exc:  # ModemError, LinkLost, a timeout: try again, later
                    log.warning("sms message failed", extra={"device_id": device.device_id,
                                                             "alert_id": event.alert_id, "attempt": attempt,
                                                             "error": str(exc)[:80]})
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            else:
                log.error("sms message given up", extra={"device_id": device.device_id, "alert_id": event.alert_id})
                return False
        await store.append_history(event.alert_id, [HistoryEntry(
            at=utcnow(), event=MESSAGE_DELIVERY, state=event.state,
            detail={"message_id": message.message_id, "channel": "sms", "status": "sent"})])
        log.info("sms message sent", extra={"device_id": device.device_id, "alert_id": event.alert_id})
        return True

    async def consider(self, conn: Connection, event: StatusEvent) -> bool:
        if event.text is not None:
            return await self.text(conn, event)
        key = (event.alert_id, event.state)
        if key in self.sent or event.state not in REPLY_STATES:
            return False
        store = self.handler.ctx.store
        device = await store.get_device(event.device_id)
        if device is None or not device.sms_replies:
            return False
        text = reply_text(device, await store.get_alert(event.alert_id), event.state)
        if text is None:
            return False
        if not self.limiter.allow(device.device_id, time.monotonic()):
            log.warning("sms reply rate-limited", extra={"device_id": device.device_id, "alert_id": event.alert_id})
            return False
        self.sent.add(key)
        for attempt in range(1, self.attempts + 1):
            try:
                await self.handler.send_sms(conn, device.identifiers["msisdn"], text)
            except Exception as exc:  # ModemError, LinkLost, a timeout: try again, later
                log.warning("sms reply failed", extra={"device_id": device.device_id, "alert_id": event.alert_id,
                                                       "attempt": attempt, "error": str(exc)[:80]})
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
                continue
            log.info("sms reply sent", extra={"device_id": device.device_id, "alert_id": event.alert_id,
                                              "state": event.state.value, "attempt": attempt})
            return True
        log.error("sms reply given up", extra={"device_id": device.device_id, "alert_id": event.alert_id})
        return False
