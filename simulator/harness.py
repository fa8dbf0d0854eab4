"""A whole embedded stack for the demo, `sim run`, `sim load` and tests: receiver, broker, bridge."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.app.config import Settings
from bridge.app.embedded import EmbeddedBridge
from bridge.infra.serving import free_port
from simulator.platform.receiver import EmbeddedReceiver
from simulator.scenario import RunContext, Scenario


@dataclass
class Stack:
    bridge: EmbeddedBridge
    receiver: EmbeddedReceiver
    settings: Settings
    mqtt_url: str | None
    workdir: Path
    virtual: dict[str, Any] = field(default_factory=dict)

    def run_context(self) -> RunContext:
        """A scenario context that can reach this stack's virtual serial devices and smart speaker."""
        ctx = RunContext(self.bridge.url, self.receiver, self.settings, self.bridge.runtime)
        ctx.scratch.update(self.virtual)
        return ctx


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Settings read from the environment by adapters (e.g. SOSBRIDGE_ALEXA_*) for this stack only."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.asynccontextmanager
async def virtual_serial_ports(
    workdir: Path, gps_device: str | None = None
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """pty pairs with a GSM modem, a GPS, an alarm receiver and a DIY button on the far side."""
    from simulator.devices.serial import VirtualGsmModem, VirtualSerialPort

    ports = {p: VirtualSerialPort(workdir / f"tty-{p}") for p in ("gsm", "nmea", "contactid", "diy")}
    for port in ports.values():
        port.plug()
    modem = VirtualGsmModem(ports["gsm"])
    modem.start()
    spec = ",".join(
        [
            f"gsm={ports['gsm'].path}?cc=44",
            f"nmea={ports['nmea'].path}?interval=0" + (f"&device={gps_device}" if gps_device else ""),
            f"contactid={ports['contactid'].path}?ack=1",
            f"diy={ports['diy'].path}",
        ]
    )
    try:
        yield spec, {"serial_ports": ports, "gsm_modem": modem}
    finally:
        await modem.stop()
        for port in ports.values():
            port.unplug()


@contextlib.asynccontextmanager
async def embedded_broker(enabled: bool = True) -> AsyncIterator[str | None]:
    """The in-process MQTT broker (amqtt), or None when it or the MQTT adapter is not installed."""
    if not enabled:
        yield None
        return
    try:
        from device_adapters.mqtt.embedded_broker import EmbeddedBroker

        broker = EmbeddedBroker(port=free_port())
        await broker.__aenter__()
    except Exception:  # the stack still runs every other transport
        yield None
        return
    try:
        yield broker.url
    finally:
        await broker.__aexit__(None, None, None)


async def wait_adapters_ready(eb: EmbeddedBridge, timeout: float = 10.0) -> None:
    """Adapters that connect out (MQTT) are ready only once subscribed; steps must not race them."""
    for adapter in eb.runtime.adapters:
        wait_ready = getattr(adapter, "wait_ready", None)
        if wait_ready is not None and adapter.name in eb.runtime.started_adapters:
            await wait_ready(timeout)


@contextlib.asynccontextmanager
async def embedded_stack(
    workdir: Path,
    *,
    mqtt_url: str | None = None,
    embedded_mqtt: bool = True,
    auto_ack_s: float | None = 0.3,
    auto_resolve_s: float | None = None,
    serial: bool = False,
    alexa: bool = False,
    carer: bool = False,
    gps_device: str | None = None,
    conveyance: bool = False,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """`conveyance` adds the platform's NG112 ends: falls also go as SIP MESSAGE to a PSAP and as EIDO
    events to a subscribed CAD (virtual["sip_psap"], virtual["eido_cad"])."""
    virtual: dict[str, Any] = {}
    environ: dict[str, str] = {}
    if alexa:
        from simulator.devices.alexa import SmartSpeaker

        speaker = SmartSpeaker.create()
        environ.update(speaker.bridge_environment(workdir))
        virtual["alexa_speaker"] = speaker
    async with contextlib.AsyncExitStack() as exits:
        if serial:
            spec, devices = await exits.enter_async_context(virtual_serial_ports(workdir, gps_device))
            overrides.setdefault("serial_ports", spec)
            virtual.update(devices)
        if carer:
            from simulator.devices.carer import carer_phone_for

            await exits.enter_async_context(carer_phone_for(virtual))
        exits.enter_context(patched_environ(environ))
        async with _stack(workdir, mqtt_url, embedded_mqtt, auto_ack_s, auto_resolve_s, virtual, overrides,
                          conveyance) as stack:
            yield stack


@contextlib.asynccontextmanager
async def _stack(
    workdir: Path,
    mqtt_url: str | None,
    embedded_mqtt: bool,
    auto_ack_s: float | None,
    auto_resolve_s: float | None,
    virtual: dict[str, Any],
    overrides: dict[str, Any],
    conveyance: bool = False,
) -> AsyncIterator[Stack]:
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    async with contextlib.AsyncExitStack() as exits:
        routes = await _conveyance_routes(exits, workdir, virtual) if conveyance else None
        async with _stack_inner(workdir, mqtt_url, embedded_mqtt, auto_ack_s, auto_resolve_s, virtual, overrides,
                                secret, token, routes) as stack:
            yield stack


Routes = Callable[[str, str], list[dict[str, Any]]]


async def _conveyance_routes(exits: contextlib.AsyncExitStack, workdir: Path, virtual: dict[str, Any]) -> Routes:
    """A PSAP for SIP MESSAGEs and the certificates for the CAD; the routes that reach them. The platform
    itself gets everything through a route of its own (a matching route replaces the default one)."""
    from simulator.platform.pki import make_pki
    from simulator.platform.sip_psap import SipPsap

    psap = await exits.enter_async_context(SipPsap())
    pki_dir = workdir / "pki"
    pki_dir.mkdir(exist_ok=True)
    pki = make_pki(pki_dir)
    eido_url = f"wss://127.0.0.1:{free_port()}/eido"
    virtual.update({"sip_psap": psap, "pki": pki, "eido_url": eido_url})
    return lambda platform_url, secret: [
        {"name": "platform", "url": platform_url, "secret": secret},
        {"name": "ng112", "url": psap.uri, "kinds": ["fall"], "sip_from": "sip:sosbridge@127.0.0.1"},
        {"name": "cad", "url": eido_url, "kinds": ["fall"], "eido_cert_file": str(pki.server_cert),
         "eido_key_file": str(pki.server_key), "eido_client_ca_file": str(pki.ca)},
    ]


@contextlib.asynccontextmanager
async def _stack_inner(
    workdir: Path,
    mqtt_url: str | None,
    embedded_mqtt: bool,
    auto_ack_s: float | None,
    auto_resolve_s: float | None,
    virtual: dict[str, Any],
    overrides: dict[str, Any],
    secret: str,
    token: str,
    routes: Routes | None = None,
) -> AsyncIterator[Stack]:
    receiver_port = int(overrides.pop("receiver_port", 0) or 0)  # 0: a free port
    async with (
        EmbeddedReceiver(
            secret=secret,
            port=receiver_port,
            jsonl_path=workdir / "contacts.jsonl",
            platform_token=token,
            auto_ack_s=auto_ack_s,
            auto_resolve_s=auto_resolve_s,
        ) as rx,
        embedded_broker(embedded_mqtt and mqtt_url is None) as broker_url,
    ):
        values: dict[str, Any] = {
            "db": str(workdir / "bridge.db"),
            "data_dir": str(workdir),
            "http_port": free_port(),
            "platform_url": rx.url,
            "platform_secret": secret,
            "platform_token": token,
            "admin_token": secrets.token_hex(16),
            "default_status": "exercise",
            "mqtt_url": mqtt_url or broker_url,
            "mqtt_client_id": f"sosbridge-{secrets.token_hex(4)}",
            "coap_enabled": True,
            "coap_port": free_port(),
            "watch_port": free_port(),
            "dc09_port": free_port(),
            "retry_base_s": 0.2,
            "retry_max_s": 2.0,
            # The virtual carer's phone listens on loopback, which contact webhooks may not reach by default.
            "notify_webhook_allow": "127.0.0.1/32",
        }
        values.update(overrides)
        settings = Settings(**values)
        environ = {"SOSBRIDGE_ROUTES": json.dumps(routes(rx.url, secret))} if routes is not None else {}
        with patched_environ(environ):  # the runtime reads its routes when it is made
            bridge = EmbeddedBridge(settings)
        async with bridge as eb, contextlib.AsyncExitStack() as ends:
            rx.receiver.bridge_url = eb.url
            await wait_adapters_ready(eb)
            if "eido_url" in virtual:
                from simulator.platform.eido_cad import EidoCad

                pki = virtual["pki"]
                virtual["eido_cad"] = await ends.enter_async_context(
                    EidoCad(virtual["eido_url"], pki.client_tls(pki.client_cert, pki.client_key)))
            yield Stack(eb, rx, settings, settings.mqtt_url, workdir, virtual)


def stack_for(scenario: Scenario, workdir: Path, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[Stack]:
    """The embedded stack with the virtual hardware a scenario says it needs."""
    return embedded_stack(
        workdir,
        serial="serial" in scenario.needs,
        alexa="alexa" in scenario.needs,
        carer="carer" in scenario.needs,
        embedded_mqtt="mqtt" in scenario.needs,
        gps_device=scenario.serial_gps_device,
        **kwargs,
    )
