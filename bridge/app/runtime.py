"""The bridge runtime: wires store, status bus, metrics, pipeline, forwarder and adapters together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from bridge.alerts.emergency_contacts import SmsGateway
from bridge.alerts.handoff import FreshContacts
from bridge.app.child_processes import ChildProcesses
from bridge.app.config import Settings
from bridge.app.delivery_process import delivery_processes
from bridge.app.delivery_sinks import portable_routes, route_timeout_s
from bridge.app.disk_alarm import check_disk
from bridge.app.intake import DispatchingIngress, IntakeLinks, build_pipeline, intake_processes, sinks_with_notify
from bridge.app.refusal_audit import RefusalAudit, flush_refusals
from bridge.core.events import StatusBus
from bridge.core.model import utcnow
from bridge.delivery.forwarder import Forwarder
from bridge.delivery.remote import RemoteDelivery, RemoteSink
from bridge.delivery.routing import load_routes
from bridge.devices.profiles import ProfileRegistry
from bridge.infra.aio import stop_tasks
from bridge.infra.health import TransportMonitor
from bridge.infra.looplag import watch_lag
from bridge.infra.memory import AfterBurst
from bridge.infra.metrics import Metrics
from bridge.infra.plugins import LoadedPlugin, load_all
from bridge.infra.private_files import private_dir
from bridge.infra.ratelimit import TokenBuckets
from bridge.ingress import Ingress
from bridge.ingress.transport import Adapter
from bridge.store import Store, make_store

if TYPE_CHECKING:

    from bridge.alerts.supervision import Supervisor

log = logging.getLogger("sosbridge.runtime")


class BridgeRuntime:
    def __init__(self, settings: Settings, store: Store | None = None, *, processes: int = 1) -> None:
        """`processes` >= 2: the platform routes' sinks send from processes-1 delivery processes
        (bridge/app/delivery_process.py); `sosbridge serve` passes SOSBRIDGE_WORKERS or its default."""
        self.settings = settings
        self.store: Store = store or make_store(settings)
        self.bus = StatusBus()
        self.metrics = Metrics()
        extra_dirs = settings.profile_dirs.split(os.pathsep) if settings.profile_dirs else []
        self.profiles = ProfileRegistry.load(extra_dirs)
        self.routes = load_routes(settings)
        self.auth_failures = TokenBuckets(settings.auth_failures_burst, settings.auth_failures_per_min / 60)
        self.refusals = RefusalAudit(settings.auth_audit_interval_s)
        self.transports = TransportMonitor()
        gateway = SmsGateway()
        self.sms_gateway = gateway
        sinks, channels = sinks_with_notify(settings, self.routes, gateway)
        # Built once and handed to each through its constructor: the ledger writes, the forwarder delivers,
        # and brand-new alerts' first contacts pass from one to the other in memory (FreshContacts).
        fresh = FreshContacts(settings.forwarder_workers, settings.lease_s)
        self.ledger, self.pipeline = build_pipeline(settings, self.store, self.bus, self.metrics, self.profiles,
                                                    self.routes, sinks.primary, channels, gateway, fresh)
        self.delivery_processes: ChildProcesses | None = None
        forwarder_sinks = dict(sinks.primary)
        remote_routes = portable_routes(self.routes) if processes > 1 else []
        if remote_routes:
            remote = RemoteDelivery()
            for route in remote_routes:  # the real sinks stay here to render bodies when a row is queued
                forwarder_sinks[route] = RemoteSink(sinks.primary[route].name, route, remote,
                                                    route_timeout_s(settings, self.routes, route))
            self.delivery_processes = delivery_processes(
                settings, self.routes, processes - 1, remote,
                lambda reason, detail: self.forwarder.raise_alarm(reason, detail),
                lambda reason: self.forwarder.clear_alarm(reason),
            )
        self.forwarder = Forwarder(
            self.store,
            self.ledger,
            self.metrics,
            forwarder_sinks,
            sinks.spool,
            fresh=fresh,
            fallbacks=sinks.fallbacks,
            workers=settings.forwarder_workers,
            lease_s=settings.lease_s,
            retry_base_s=settings.retry_base_s,
            retry_max_s=settings.retry_max_s,
            fallback_after_attempts=settings.fallback_after_attempts,
        )
        self.intake_processes: ChildProcesses | None = None
        if settings.intake_workers:
            links = IntakeLinks(settings.intake_workers, self.bus, self.metrics, self.profiles, self.forwarder.wake,
                                settings.intake_answer_timeout_s)
            self.intake_processes = intake_processes(settings, self.routes, links, gateway,
                                                     self.forwarder.raise_alarm, self.forwarder.clear_alarm)
            self.ingress: Ingress = DispatchingIngress(links, self.store, self.pipeline, self.profiles, self.metrics,
                                                       max_frame_bytes=settings.max_body_bytes,
                                                       device_cache_s=settings.device_cache_s)
        else:
            self.ingress = Ingress(self.store, self.pipeline, self.profiles, self.metrics,
                                   max_frame_bytes=settings.max_body_bytes, device_cache_s=settings.device_cache_s)
        self.plugins: dict[str, list[LoadedPlugin]] = load_all()
        self.adapters: list[Adapter] = []
        for plugin in self.plugins["sosbridge.adapters"]:
            try:
                adapter = plugin.obj()
                if adapter.enabled(settings):
                    self.adapters.append(adapter)
            except Exception as exc:
                log.error("adapter failed to initialise", extra={"adapter": plugin.name, "error": repr(exc)})
        self.started_adapters: list[str] = []
        self._health_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self.supervisor: Supervisor | None = None

    async def start(self) -> None:
        private_dir(self.settings.data_path)  # 0700: the stores, keys and spool below it are private
        await self.store.open()
        for sink in {id(s): s for s in [*self.forwarder.sinks.values(), *self.forwarder.fallbacks.values()]}.values():
            start = getattr(sink, "start", None)  # a sink that serves (the EIDO notifier) listens from now
            if start is not None:
                try:
                    await start()
                except Exception as exc:  # a port in use or a bad certificate: loud, but the rest runs
                    self.forwarder.raise_alarm(f"sink_{sink.name}_failed", repr(exc))
        if self.delivery_processes is not None:
            await self.delivery_processes.start()
        await self.forwarder.start()
        for adapter in self.adapters:
            try:
                await adapter.start(self)
                self.started_adapters.append(adapter.name)
            except Exception as exc:
                # One transport failing (a port in use, a broker down at boot) must not stop the others.
                self.forwarder.raise_alarm(f"adapter_{adapter.name}_failed", repr(exc))
        if self.intake_processes is not None:
            # After the transports: a hello tells what they declared (a GSM port). Frames read meanwhile wait
            # for their process (bridge/app/intake.py).
            await self.intake_processes.start()
        if self.settings.supervision_enabled:
            from bridge.alerts.supervision import Supervisor

            self.supervisor = Supervisor(self)
            await self.supervisor.start()
        self._health_task = asyncio.create_task(self._health_loop(), name="health")
        self._lag_task = asyncio.create_task(watch_lag(self.metrics.loop_lag.observe), name="loop-lag")
        log.info("bridge started", extra={"adapters": self.started_adapters})

    async def _health_loop(self) -> None:
        last_purge = 0.0
        after_burst = AfterBurst()  # the heap's free pages go back to the system once a flood is over
        while True:
            with contextlib.suppress(Exception):
                await self.forwarder.refresh_health(self.settings.fallback_after_attempts)
            with contextlib.suppress(Exception):
                self.transports.check(self.adapters, self.started_adapters)  # logs a transport going down
            with contextlib.suppress(Exception):
                await check_disk(self)  # the disk_low alarm: bridge/app/disk_alarm.py
            with contextlib.suppress(Exception):
                await flush_refusals(self, time.monotonic())
            if time.monotonic() - last_purge > 3600:
                last_purge = time.monotonic()
                with contextlib.suppress(Exception):
                    await self.purge_expired()
            with contextlib.suppress(Exception):
                after_burst.tick()
            await asyncio.sleep(1.0)

    async def purge_expired(self) -> int:
        """Retention: closed alerts older than SOSBRIDGE_RETENTION_DAYS go, with their history and contacts."""
        before = utcnow() - timedelta(days=self.settings.retention_days)
        purged = await self.store.purge_closed(before)
        if purged:
            log.info("retention purge", extra={"purged_alerts": purged})
        return purged

    async def stop(self) -> None:
        if self.supervisor is not None:
            with contextlib.suppress(Exception):
                await self.supervisor.stop()
        if self._health_task is not None:
            await stop_tasks([self._health_task])
        if self._lag_task is not None:
            await stop_tasks([self._lag_task])
        for adapter in reversed(self.adapters):
            if adapter.name in self.started_adapters:
                with contextlib.suppress(Exception):
                    await adapter.stop()
        if self.intake_processes is not None:  # after the transports: they waited for their answers
            await self.intake_processes.stop()
        await self.pipeline.stop()  # texts waiting for their rate are queued now, before the forwarder stops
        await self.forwarder.stop()
        if self.delivery_processes is not None:  # after the forwarder: nothing waits for them any more
            await self.delivery_processes.stop()
        with contextlib.suppress(Exception):
            await flush_refusals(self, float("inf"))  # the refusals counted since the last summary row
        await self.store.close()
