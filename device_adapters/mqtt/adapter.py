"""The MQTT transport: panic buttons, zigbee2mqtt, LoRaWAN (ChirpStack/TTN), OwnTracks and Hermes intents.

Three jobs. Receive: each topic becomes a `Claim` (topics.py) and the frame goes to the ingress, which
identifies, decodes, admits and stores it. Answer: PUBACK only when the Receipt says so (never for a
frame that was not stored: it is retried, and the broker redelivers after a restart); refusals and
unmatched frames on `sosbridge/<tenant>/<device>/error`; Hermes hears a spoken reply. Notify: alert
state changes go back to the device on `sosbridge/<tenant>/<device>/status` (retained).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from bridge.alerts.pipeline import silent_from_start
from bridge.alerts.supervision import gateway_state_changed
from bridge.core.events import StatusEvent
from bridge.core.lifecycle import DEVICE_MESSAGES
from bridge.core.messages import MESSAGE_DELIVERY
from bridge.core.model import Device, HistoryEntry, utcnow
from bridge.devices.decoding import DecodeError, Frame, parse_json_object
from bridge.devices.profiles import ProfileRegistry
from bridge.infra.aio import READY_TIMEOUT_S, await_ready, stop_tasks, wait_event
from bridge.ingress import Claim, Receipt
from bridge.ingress.ahead import SendersAhead
from bridge.ingress.repeats import RepeatCache, digest
from bridge.ingress.transport import AdapterContext, BaseAdapter
from bridge.ingress.turns import SenderTurns
from bridge.store.base import Store, StoreError
from device_adapters.decoders import hermes as hermes_decoder
from device_adapters.decoders.zigbee2mqtt import parse_availability
from device_adapters.mqtt import topics
from device_adapters.mqtt.client import Inbound, MqttConnection
from device_adapters.mqtt.limits import FloodGuard
from device_adapters.mqtt.settings import MqttSettings
from device_adapters.mqtt.url import parse_broker_url

if TYPE_CHECKING:
    from bridge.app.config import Settings

log = logging.getLogger("sosbridge.mqtt")

TRANSPORT = "mqtt"
UNROUTED_ERROR_TOPIC = "sosbridge/_unrouted/error"
RAW_LIMIT = 4096
MQTT_DEVICE_CACHE = 50_000
# A sender's backlogs handed to intake processes and not yet finished: while one is stored the next ones are
# read and wait behind it, so reading and storing overlap. With A flat out, B's p99: 1.5 s at 2, 0.5-1.2 s at
# 8 (docs/testing/benchmarks.md#send-ahead); the broker's window (1,000 frames) bounds them anyway.
AHEAD_DEPTH = 8


@dataclass
class MqttOptions:
    """Adapter options given in code (tests); by default built from MqttSettings when the adapter starts."""

    z2m_bases: tuple[str, ...] = ("zigbee2mqtt",)
    store_retry_max_s: float = 5.0
    sender_workers: int = 256  # senders' turns under way at once (bridge/ingress/turns.py)
    sender_turns_per_round: int = 32  # senders' turns started per round of the event loop

    @classmethod
    def from_settings(cls, own: MqttSettings) -> MqttOptions:
        return cls(z2m_bases=own.z2m_base_topics, sender_workers=own.sender_workers,
                   sender_turns_per_round=own.sender_turns_per_round)


def status_topic(tenant: str, device: str) -> str:
    return f"sosbridge/{tenant}/{device}/status"


def messages_topic(tenant: str, device: str) -> str:
    return f"sosbridge/{tenant}/{device}/status/messages"


async def record_delivery(store: Store, event: StatusEvent, channel: str) -> None:
    assert event.text is not None
    entry = HistoryEntry(at=utcnow(), event=MESSAGE_DELIVERY, state=event.state,
                         detail={"message_id": event.text.message_id, "channel": channel, "status": "sent"})
    await store.append_history(event.alert_id, [entry])


def error_topic(tenant: str, device: str) -> str:
    return f"sosbridge/{tenant}/{device}/error"


class MqttAdapter(BaseAdapter):
    name = "mqtt"
    transports = {"mqtt": frozenset({"mqtt_puback", "mqtt_status", "speech"})}

    # The running state: set once by start(), before the connection can hand over any frame.
    ctx: AdapterContext
    profiles: ProfileRegistry
    conn: MqttConnection

    def __init__(self, options: MqttOptions | None = None) -> None:
        self._given_options = options
        self.options = options or MqttOptions()  # from MqttSettings in start(), unless given
        self._started = False
        # Answers on the error topics are rate-limited per topic; frames themselves never are (the
        # ingress admits per device: emergencies always, non-emergencies coalesced).
        self.error_flood = FloodGuard(5, 1)
        self.handled = 0  # messages this instance processed (acknowledged), for shared-subscription checks
        # Per sender (topic), in arrival order, each frame with its repeat key. Senders take turns, a
        # bounded number at a time, so the event loop's rounds stay short (bridge/ingress/turns.py).
        self._turns: SenderTurns[str, tuple[Inbound, bytes | None]] = SenderTurns(
            self._serve, self.options.sender_workers, self.options.sender_turns_per_round)
        # Backlogs handed to intake processes before the last was answered (bridge/ingress/ahead.py).
        self._ahead: SendersAhead[str] = SendersAhead(AHEAD_DEPTH)
        self._status_task: asyncio.Task[None] | None = None
        self._stopping = False
        # Whether a device listens on MQTT, per device id: bounded (a flood of new devices must not grow it).
        self._mqtt_devices: LRUCache[str, bool] = LRUCache(MQTT_DEVICE_CACHE)
        # Byte-identical repeats (topic + payload) of frames stored or in flight: answered without the
        # ingress; a repeat of a frame in flight is acknowledged with its original, after the commit.
        self.repeats: RepeatCache[bool] = RepeatCache()

    # -- Adapter protocol --------------------------------------------------------------------------
    def enabled(self, settings: Settings) -> bool:
        return bool(settings.section(MqttSettings).url)

    async def start(self, ctx: AdapterContext) -> None:
        settings, own = ctx.settings, ctx.settings.section(MqttSettings)
        assert own.url, "the MQTT adapter needs SOSBRIDGE_MQTT_URL"
        self.options = self._given_options or MqttOptions.from_settings(own)
        self._turns.workers = self.options.sender_workers
        self._turns.per_round = self.options.sender_turns_per_round
        self.ctx = ctx
        self.profiles = getattr(ctx, "profiles", None) or ProfileRegistry.load(
            settings.profile_dirs.split(os.pathsep) if settings.profile_dirs else []
        )
        url = parse_broker_url(own.url)
        if own.shared_group and not url.mqtt5:
            log.warning("shared subscriptions need MQTT v5 on most brokers", extra={"broker": url.redacted()})
        self.conn = MqttConnection(
            url,
            own.client_id,
            topics.subscriptions(self.options.z2m_bases, self.profiles),  # + profiles' {scheme} topics
            asyncio.get_running_loop(),
            self._on_message,
            shared_group=own.shared_group,
            keepalive_s=own.keepalive,
        )
        self._started = True
        # Listen for status changes before the first message can create one.
        ready = asyncio.Event()
        self._status_task = asyncio.create_task(self._status_loop(ready), name="mqtt-status")
        await await_ready(ready, self._status_task, READY_TIMEOUT_S, "the MQTT status publisher")
        self.conn.start()
        log.info("mqtt adapter started", extra={"broker": url.redacted(), "client_id": own.client_id})

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until connected and subscribed (tests and the demo use this; start() never blocks on it)."""
        if not self._started:
            raise RuntimeError("the MQTT adapter is not started")
        if not await wait_event(self.conn.subscribed, timeout):
            raise TimeoutError(f"not connected and subscribed to the broker within {timeout:g} s")

    async def stop(self) -> None:
        self._stopping = True
        if self._turns.tasks or self._ahead.tasks:
            # Let in-flight messages finish storing so they can be acknowledged before we go.
            await asyncio.wait([*self._turns.tasks, *self._ahead.tasks], timeout=5)
        if self._status_task is not None:
            await stop_tasks([self._status_task])
        if self._started:
            await self.conn.stop()
        for task in [*self._turns.tasks, *self._ahead.tasks]:
            task.cancel()
        for _ in self._turns.take_all():  # never acknowledged: the broker keeps them
            self.conn.release_slot()

    # -- inbound -----------------------------------------------------------------------------------
    def _on_message(self, msg: Inbound) -> None:
        """Byte-level work only: the topic names the sender; its frame joins that sender's queue. A sender
        with nothing queued gets a worker at once, behind no other sender's backlog."""
        if self._stopping:
            self.conn.release_slot()
            return  # not acknowledged: the broker keeps it for the next session
        key = _repeat_key(msg)
        if key is not None and self.repeats.stored(key) is not None:
            # A byte-identical repeat of a frame already stored (a storm of redeliveries and retries):
            # acknowledged here, behind no sender's queue and with no task of its own.
            self._ack_duplicate(msg)
            self.conn.release_slot()
            return
        self._turns.put(msg.topic, (msg, key))

    def _acknowledge(self, msg: Inbound) -> None:
        self.conn.ack(msg)
        self.handled += 1

    def _ack_duplicate(self, msg: Inbound) -> None:
        """A repeat of a stored frame: counted and acknowledged, without the ingress."""
        self.ctx.metrics.duplicate(TRANSPORT)
        self._acknowledge(msg)

    async def _serve(self, topic: str, batch: list[tuple[Inbound, bytes | None]]) -> None:
        """One sender's turn: every frame it had waiting goes to the ingress together (its lane folds the
        presses into one commit) and each is acknowledged once stored. Senders take turns (SenderTurns),
        so a flooding sender's backlog is one job among many. With intake processes a backlog goes ahead
        (`_send_ahead`) and the turn ends once it is sent; whatever else the sender sends waits for its
        backlogs sent ahead to be finished first."""
        handed = False
        try:
            if len(batch) == 1:  # the common case: no task per frame (issue 27)
                await self._ahead.wait_all(topic)
                outcomes: list[BaseException | None] = [await _outcome(self._handle(*batch[0]))]
            elif (backlog := self._backlog(batch)) is not None:
                handed = await self._send_ahead(topic, *backlog, len(batch))
                if handed:
                    return
                await self._ahead.wait_all(topic)
                outcomes = [await _outcome(self._handle_backlog(*backlog))] * len(batch)
            else:
                await self._ahead.wait_all(topic)
                outcomes = await asyncio.gather(*(self._handle(m, k) for m, k in batch),
                                                return_exceptions=True)
            for (msg, _key), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):  # a bug: logged; the frame stays unacknowledged
                    log.error("mqtt frame not handled; not acknowledged",
                              extra={"topic": msg.topic, "error": repr(outcome)})
        finally:
            if not handed:
                for _ in batch:
                    self.conn.release_slot()

    async def _send_ahead(self, topic: str, route: topics.Route, batch: list[Inbound], keys: list[bytes],
                          slots: int) -> bool:
        """Hand a backlog to the ingress without waiting for its answer (`Ingress.send_ahead`: intake
        processes), so the broker's window refills and the next backlog is read while this one is stored; a
        task of its own finishes it, after the sender's backlog before it (bridge/ingress/ahead.py). False:
        not offered, or not now (handled in this turn instead)."""
        await self._ahead.wait_room(topic)
        if not self._ahead.may_send(topic):
            return False
        sent = self.ctx.ingress.send_ahead(self._backlog_frames(route, batch), ref_scheme=_ref_scheme(route),
                                           repeats_answered=True, behind=self._ahead.channel(topic))
        if sent is None:
            return False
        for key in dict.fromkeys(keys):  # copies within the batch share their digest's one entry in flight
            self.repeats.begin(key)
        finishing = asyncio.create_task(self._finish_ahead(topic, route, batch, keys, sent.receipts,
                                                           self._ahead.last(topic), slots))
        self._ahead.add(topic, sent.channel, finishing)
        return True

    async def _finish_ahead(self, topic: str, route: topics.Route, batch: list[Inbound], keys: list[bytes],
                            receipts: asyncio.Future[list[Receipt]], before: asyncio.Task[None] | None,
                            slots: int) -> None:
        """A backlog sent ahead, once answered and once the sender's backlog before it is finished: each
        frame answered and acknowledged if stored, the others retried in order, as `_handle_backlog` does."""
        answered: set[bytes] = set()
        try:
            got = await receipts
            if not all(r.acknowledge for r in got):
                self._ahead.failed(topic)  # nothing more of this sender goes ahead until this is retried
            if before is not None:
                await asyncio.wait([before])
            again = self._settle(route, batch, keys, got, answered)
            for msg, key in again:
                await self._handle_remembered(msg, key)
        except Exception as exc:  # a bug: logged; what was not acknowledged stays so, and the broker resends it
            log.error("mqtt backlog not handled; not acknowledged", extra={"topic": topic, "error": repr(exc)})
        finally:
            for key in keys:
                if key not in answered:
                    self.repeats.finish(key, None)
            for _ in range(slots):
                self.conn.release_slot()

    def _backlog(self, batch: list[tuple[Inbound, bytes | None]]
                 ) -> tuple[topics.Route, list[Inbound], list[bytes]] | None:
        """A sender's backlog that may go to the ingress as one batch (`Ingress.receive_batch`): frames of a
        device's own kind of topic, none retained and none a byte-identical copy of a frame in flight (that
        one waits for its original: `_handle`). Repeats of stored frames are acknowledged here and left out.
        Copies of one another go in it with the frames around them, each in its place: the lane folds a
        press's copies (a repeated message id counts once, a press without an id counts each time) and keeps
        the newest fix, and a cancel sent after them stays after them. A batch of nothing but copies of one
        frame (a storm's retransmissions) is handled frame by frame instead: the copies wait for the first,
        and are answered with it without being decoded. None: handle each frame on its own."""
        route = topics.route(batch[0][0].topic, self.options.z2m_bases, self.profiles)
        if route is None or route.kind in ("z2m_bridge", "reply", "hermes"):
            return None
        keys = [key for _msg, key in batch]
        if None in keys or len(set(keys)) == 1 or any(self.repeats.in_flight(k) for k in keys if k):
            return None
        fresh: list[Inbound] = []
        fresh_keys: list[bytes] = []
        for msg, key in batch:
            assert key is not None  # checked above: every frame of the batch has its repeat key
            if self.repeats.stored(key) is not None:
                self._ack_duplicate(msg)
            else:
                fresh.append(msg)
                fresh_keys.append(key)
        return route, fresh, fresh_keys

    async def _handle_backlog(self, route: topics.Route, batch: list[Inbound], keys: list[bytes]) -> None:
        """One sender's backlog through the ingress together: its presses fold into one commit, its newest
        fix is kept, and each frame is answered and acknowledged once stored. A frame not stored goes
        round `_handle_frame`'s retries, in order."""
        for key in dict.fromkeys(keys):  # copies within the batch share their digest's one entry in flight
            self.repeats.begin(key)
        answered: set[bytes] = set()
        try:
            # Every frame of a backlog has its repeat key: this adapter remembers the stored ones.
            receipts = await self.ctx.ingress.receive_batch(self._backlog_frames(route, batch),
                                                            ref_scheme=_ref_scheme(route), repeats_answered=True)
            again = self._settle(route, batch, keys, receipts, answered)
        finally:
            for key in keys:
                if key not in answered:
                    self.repeats.finish(key, None)
        for msg, key in again:
            await self._handle_remembered(msg, key)

    def _backlog_frames(self, route: topics.Route, batch: list[Inbound]) -> list[tuple[Frame, Claim, str]]:
        return [(Frame(payload=m.payload, meta=dict(route.meta)), self._claim(route, m.payload),
                 m.payload[:RAW_LIMIT].decode("utf-8", "replace")) for m in batch]

    def _settle(self, route: topics.Route, batch: list[Inbound], keys: list[bytes], receipts: list[Receipt],
                answered: set[bytes]) -> list[tuple[Inbound, bytes]]:
        """A backlog's Receipts on the wire: each stored frame acknowledged (its repeats remembered), the
        others returned, in order, to be retried."""
        again: list[tuple[Inbound, bytes]] = []
        for msg, key, receipt in zip(batch, keys, receipts, strict=True):
            self._answer(route, msg, receipt)
            if receipt.acknowledge:
                self._acknowledge(msg)
                self.repeats.finish(key, True if receipt.repeatable else None)
            else:
                self.repeats.finish(key, None)
                again.append((msg, key))
            answered.add(key)
        return again

    async def _handle(self, msg: Inbound, key: bytes | None) -> None:
        """One frame; `key` is its repeat digest (`_repeat_key`), None when a repeat needs the ingress too."""
        if key is None:
            await self._handle_frame(msg)
            return
        if self.repeats.stored(key) is None:
            original = self.repeats.in_flight(key)
            if original is None:
                self.repeats.begin(key)
                repeatable = False
                try:
                    repeatable = await self._handle_frame(msg)
                finally:
                    self.repeats.finish(key, True if repeatable else None)
                return
            # The original is being stored: answered with it, once it is (never before). If it was not
            # remembered (no message id, refused, stopping), this frame is handled on its own, without
            # waiting on another copy: 5,000 identical frames waiting here and racing for the next
            # "original" woke each other 5,000 times each (4.8 ms a frame, one device starving the rest).
            if not await original:
                if not self._stopping:
                    await self._handle_remembered(msg, key)
                return
        self._ack_duplicate(msg)

    async def _handle_remembered(self, msg: Inbound, key: bytes) -> None:
        """`_handle_frame` for a frame with a repeat key outside its in-flight bookkeeping (retried after a
        batch, or a copy whose original was not remembered): its repeats are answered by this adapter, never
        by the ingress (`repeats_answered`), so a stored one is remembered here."""
        if await self._handle_frame(msg):
            self.repeats.remember(key, True)

    async def _handle_frame(self, msg: Inbound) -> bool:
        """Through the ingress until stored (or stopping), then acknowledged. True: the frame was stored
        and a byte-identical repeat of it is a duplicate."""
        delay = 0.1
        receipt: Receipt | None = None
        while True:
            try:
                receipt = await self._process(msg)
                if receipt is None or receipt.acknowledge:
                    break
            except Exception as exc:
                # A bug on the way to the store: never acknowledge what may not be stored.
                log.error("mqtt message not stored; not acknowledged", extra={"topic": msg.topic,
                                                                              "error": repr(exc)}, exc_info=True)
            # Not stored: retry; if we stop first, the broker redelivers it to the next session. Losing an
            # alert silently is worse than one message holding an in-flight slot.
            if self._stopping:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.store_retry_max_s)
            if self._stopping:
                return False
        self._acknowledge(msg)
        return receipt is not None and receipt.repeatable

    async def _process(self, msg: Inbound) -> Receipt | None:
        """Receive: topic → Claim → the ingress → answer on the wire. None: not a frame for us."""
        route = topics.route(msg.topic, self.options.z2m_bases, self.profiles)
        if route is None:
            return None
        if route.kind == "z2m_bridge":
            if msg.retain:
                return None
            return await self._gateway_state(route, msg)
        if route.kind == "reply":
            # The person's text for the platform: through the ingress like every frame (docs/platform/messages.md).
            receipt = await self.ctx.ingress.receive_text(self._claim(route, msg.payload), msg.payload,
                                                          retained=msg.retain)
            self._answer(route, msg, receipt)
            return receipt
        meta = dict(route.meta)
        if route.kind == "hermes" and not self._hermes_intent_configured(_intent_or_empty(msg.payload)):
            return None  # somebody else's voice intent ("what time is it"): not addressed to us
        claim = self._claim(route, msg.payload)
        frame = Frame(payload=msg.payload, meta=meta, retained=msg.retain)
        raw = msg.payload[:RAW_LIMIT].decode("utf-8", "replace")
        receipt = await self.ctx.ingress.receive(frame, claim, raw=raw, ref_scheme=_ref_scheme(route),
                                                 repeats_answered=_has_repeat_key(msg))
        spoken = None
        if route.kind == "hermes":  # a satellite speaks the state: a redelivered intent needs it too
            receipt = await self.ctx.ingress.with_state(receipt)
            spoken = await self._hidden_cancel(receipt)
        self._answer(route, msg, receipt, spoken)
        return receipt

    async def _hidden_cancel(self, receipt: Receipt) -> str | None:
        """What a satellite says to a cancel of an alert raised silently: as if there were none to cancel
        (the pipeline held the cancel; docs/voice/duress.md)."""
        last = receipt.last
        if receipt.status != "accepted" or last is None or last.outcome != "cancelled" or not last.alert_id:
            return None
        alert = await self.ctx.store.get_alert(last.alert_id)
        return NOTHING_TO_CANCEL if alert is not None and silent_from_start(alert) else None

    def _claim(self, route: topics.Route, payload: bytes) -> Claim:
        """Who the topic (and, for Hermes and TTN, the payload) says is speaking."""
        if route.kind in ("own", "reply"):
            # Our own topic names the device; the broker ACL confines each device's credentials to it.
            return Claim(TRANSPORT, auth="broker", device_id=route.device or "", tenant=route.tenant,
                         label=f"device {route.device!r} in {route.tenant!r}")
        if route.kind == "hermes":
            site = hermes_decoder.site_id(_json_or_empty(payload))
            return Claim(TRANSPORT, auth="broker", identifiers=(("hermes_site", site),), label=f"hermes site {site!r}")
        if route.kind == "ttn":
            doc = _json_or_empty(payload)
            named = doc.get("end_device_ids")
            ids = named if isinstance(named, dict) else {}
            eui = str(ids.get("dev_eui") or "").lower()
            return Claim(TRANSPORT, auth="broker", identifiers=(("deveui", eui), ("ttn", route.value or "")),
                         label=f"TTN device {route.value!r}")
        assert route.scheme is not None and route.value is not None
        candidates: tuple[tuple[str, str], ...] = ((route.scheme, route.value),)
        if route.kind == "z2m":
            candidates = (("z2m", f"{route.meta.get('gateway')}/{route.value}"), *candidates)
        return Claim(TRANSPORT, auth="broker", identifiers=candidates, label=f"{route.scheme} {route.value!r}")

    def _answer(self, route: topics.Route, msg: Inbound, receipt: Receipt, spoken: str | None = None) -> None:
        """The Receipt on the wire: the error topic for refusals and unmatched frames, Hermes speech."""
        if receipt.device is not None and receipt.status in ("accepted", "coalesced"):
            self._mqtt_devices[receipt.device.device_id] = True
        if receipt.status in ("refused", "unmatched"):
            self._publish_error(route, receipt)
        if route.kind != "hermes" or (receipt.profile is not None and receipt.profile.ack != "speech"):
            return
        doc = _json_or_empty(msg.payload)
        silent = receipt.profile is not None and _intent_or_empty(msg.payload) in {
            str(i) for i in receipt.profile.options.get("silent_intents", [])
        }
        if silent:
            # A silent intent is a duress phrase: whatever happened, nothing said may reveal an alert.
            self._end_session(doc, HERMES_SILENT_REPLY)
        elif receipt.status == "refused" and receipt.code == "unknown_device":
            self._end_session(doc, "This voice assistant is not registered with the emergency service. "
                                   "Please call 999.")
        elif receipt.status == "refused" and receipt.code == "invalid":
            self._end_session(doc, "Sorry, I could not understand that.")
        elif receipt.status == "refused":
            self._end_session(doc, f"Sorry: {receipt.reason}.")
        elif receipt.status == "accepted":
            last = receipt.last
            self._end_session(doc, spoken or (DEVICE_MESSAGES[last.state] if last and last.state else "Done."))

    def _publish_error(self, route: topics.Route, receipt: Receipt) -> None:
        device = receipt.device
        if route.kind in ("own", "reply"):
            topic = error_topic(route.tenant or "", route.device or "")
        elif device is not None:
            topic = error_topic(device.tenant_id, device.device_id)
        else:
            topic = UNROUTED_ERROR_TOPIC
        if self.error_flood.allow(topic, time.monotonic()):
            body = {"code": receipt.code, "reason": receipt.reason, "topic": route.meta.get("topic"), "at": _now()}
            self.conn.publish(topic, json.dumps(body), qos=0)

    def _hermes_intent_configured(self, name: str) -> bool:
        for profile in self.profiles.by_decoder("hermes"):
            helps, cancels = hermes_decoder.configured_intents(profile)
            if name in helps or name in cancels:
                return True
        return False

    # -- zigbee2mqtt gateway going offline (its last will) ------------------------------------------
    async def _gateway_state(self, route: topics.Route, msg: Inbound) -> Receipt:
        """zigbee2mqtt's bridge/state (its last will): the same path supervision takes for a silent gateway,
        through the ingress's lanes like every other observation."""
        state = parse_availability(msg.payload)
        if state is None:
            receipt = Receipt.refused("invalid", "bridge/state payload must be online or offline")
            self.ctx.metrics.rejected(TRANSPORT, "invalid")
            self._publish_error(route, receipt)
            return receipt
        gateway = route.meta["gateway"]
        online = state == "online"
        try:
            await gateway_state_changed(
                self.ctx.store,
                self.ctx.ingress.observations,
                gateway,
                online,
                transport=TRANSPORT,
                reason=f"zigbee2mqtt gateway {gateway!r} " + ("is back online" if online else "went offline"),
            )
        except StoreError:
            return Receipt("not_stored", "not_stored", "not stored; retry")
        return Receipt("accepted")

    # -- outbound: status topic and Hermes answers -------------------------------------------------
    async def _status_loop(self, ready: asyncio.Event) -> None:
        async with self.ctx.bus.subscribe() as queue:
            ready.set()
            while True:
                # Coalesce what queued up: the status topic is retained per device, so only each device's
                # latest state is worth publishing. Under a flood this cuts publishes (and paho's queue of
                # unacknowledged QoS 1 messages) to one per device per batch.
                batch = [await queue.get()]  # a service loop's wait: stop() cancels it
                while not queue.empty() and len(batch) < 1000:
                    batch.append(queue.get_nowait())
                # Text messages are never coalesced: each one is published on its own sub-topic.
                for event in batch:
                    if event.text is not None:
                        await self._publish_text(event)
                latest = {(e.tenant_id, e.device_id): e for e in batch if e.text is None}
                for event in latest.values():
                    await self._publish_status(event)

    async def _publish_status(self, event: StatusEvent) -> None:
        if event.covert:
            # A duress or silent panic alert: the retained topic drives LEDs and satellites that whoever
            # coerces the person can see. It keeps showing what it showed before (docs/voice/duress.md).
            return
        try:
            if not await self._is_mqtt_device(event.device_id, event.transport, event.device):
                return
            body = {
                "alert_id": event.alert_id,
                "state": event.state.value,
                "event": event.event,
                "message": event.message,
                "at": _now(),
            }
            # Retained, so a button that reconnects still shows the latest state on its LED.
            self.conn.publish(
                status_topic(event.tenant_id, event.device_id), json.dumps(body), qos=1, retain=True
            )
        except Exception:
            log.exception("status publish failed", extra={"alert_id": event.alert_id})

    async def _publish_text(self, event: StatusEvent) -> None:
        """A platform message on `.../status/messages` (QoS 1, not retained: each message once, in order),
        with its delivery recorded; spoken by a Hermes satellite only when it may make a sound."""
        assert event.text is not None
        try:
            if not await self._is_mqtt_device(event.device_id):
                return
            self.conn.publish(messages_topic(event.tenant_id, event.device_id),
                              json.dumps(event.text.body(event.alert_id)), qos=1)
            await record_delivery(self.ctx.store, event, "mqtt")
            # Spoken aloud only when it may make a sound: never on a silent or duress alert unless the
            # platform asked (audible) and the device record allows it (the pipeline decided `audible`).
            if event.text.discreet and not event.text.audible:
                return
            device = await self.ctx.store.get_device(event.device_id)
            site = device.identifiers.get("hermes_site") if device else None
            if site:
                say = {"text": event.text.text, "siteId": site, "id": event.text.message_id}
                if event.text.language:
                    say["lang"] = event.text.language
                self.conn.publish(HERMES_TTS_TOPIC, json.dumps(say), qos=1)
                await record_delivery(self.ctx.store, event, "hermes_tts")
        except Exception:
            log.exception("message publish failed", extra={"alert_id": event.alert_id})

    async def _is_mqtt_device(self, device_id: str, transport: str | None = None,
                              known_device: Device | None = None) -> bool:
        known = self._mqtt_devices.get(device_id)
        if known is not None:
            return known
        if transport == TRANSPORT:
            # Raised over MQTT: an MQTT device, no store read (issue 27: a point lookup per alert).
            self._mqtt_devices[device_id] = True
            return True
        # The record the intake just had (an alert raised over HTTP, voice ...), else one read.
        device = known_device if known_device is not None and known_device.device_id == device_id else (
            await self.ctx.store.get_device(device_id))
        profile = self.profiles.get(device.profile_id) if device else None
        is_mqtt = device is not None and (
            any(s in device.identifiers for s in topics.SCHEMES)
            or (profile is not None and profile.transport == "mqtt")
            or device.gateway_id is not None
        )
        self._mqtt_devices[device_id] = is_mqtt
        return is_mqtt

    def _end_session(self, doc: dict[str, Any], text: str) -> None:
        session = doc.get("sessionId")
        if not session or not self._started:
            return
        body = {"sessionId": session, "text": text}
        self.conn.publish("hermes/dialogueManager/endSession", json.dumps(body), qos=1)


HERMES_SILENT_REPLY = "OK, noted."
NOTHING_TO_CANCEL = "You have no open alert to cancel."  # as Alexa and Assist say it
HERMES_TTS_TOPIC = "hermes/tts/say"


async def _outcome(handling: Coroutine[Any, Any, None]) -> BaseException | None:
    """What `gather(..., return_exceptions=True)` gives for one coroutine, without a task. A
    cancellation (stopping) is raised, not returned."""
    try:
        await handling
    except Exception as exc:
        return exc
    return None


def _ref_scheme(route: topics.Route) -> str | None:
    """LoRaWAN network servers name a device by its DevEUI. Pure."""
    return "deveui" if route.kind in ("chirpstack", "ttn") else None


def _repeat_key(msg: Inbound) -> bytes | None:
    """The digest a byte-identical repeat of `msg` is recognised by (bridge/ingress/repeats.py), computed
    once when the frame is read; None when a repeat must go through the ingress too (retained, or a topic
    whose answer is more than the PUBACK). Pure."""
    return digest(msg.topic, msg.payload) if _has_repeat_key(msg) else None


def _has_repeat_key(msg: Inbound) -> bool:
    """Whether this adapter answers `msg`'s byte-identical repeats itself (`_repeat_key`). Pure."""
    return not msg.retain and _repeat_answered_by_puback(msg.topic)


def _repeat_answered_by_puback(topic: str) -> bool:
    """Frames whose only answer is the PUBACK, so a repeat may be acknowledged without the ingress: not
    Hermes intents (a satellite speaks each answer) nor zigbee2mqtt gateway states. Pure."""
    return not topic.startswith("hermes/") and not topic.endswith("/bridge/state")


def _intent_or_empty(payload: bytes) -> str:
    doc = _json_or_empty(payload)
    intent = doc.get("intent")
    name = intent.get("intentName") if isinstance(intent, dict) else None
    return name if isinstance(name, str) else ""


def _json_or_empty(payload: bytes) -> dict[str, Any]:
    try:
        return parse_json_object(payload)
    except DecodeError:
        return {}


def _now() -> str:
    return utcnow().isoformat()
