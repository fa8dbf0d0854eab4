"""`sosbridge` command line: serve, receiver, devices, profiles, schema, demo, sim."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bridge.config import Settings, load_settings

app = typer.Typer(help="SOS Bridge: wearables, panic buttons and voice assistants to the police.", no_args_is_help=True)
devices_app = typer.Typer(help="Register and manage devices (works on the local store).", no_args_is_help=True)
profiles_app = typer.Typer(help="Device profiles.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(profiles_app, name="profiles")

console = Console(width=None if Console().is_terminal else 160)
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="TOML configuration file")]


def _settings(config: str | None, **overrides: Any) -> Settings:
    return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})


# -- serve ----------------------------------------------------------------------------------------------
@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port")] = None,
    embedded_broker: Annotated[bool, typer.Option(help="Run an in-process MQTT broker on 127.0.0.1")] = False,
    broker_port: Annotated[int, typer.Option(help="Port of the embedded broker")] = 1883,
) -> None:
    """Run the bridge: HTTP API, enabled adapters and the forwarder."""
    from bridge.logs import configure_logging

    # `serve` starts the CoAP server unless told otherwise (library and test defaults leave it off).
    coap_default = None if "SOSBRIDGE_COAP_ENABLED" in os.environ else True
    settings = _settings(config, http_host=host, http_port=port, coap_enabled=coap_default)
    configure_logging(settings.log_level)
    asyncio.run(_serve(settings, embedded_broker, broker_port))


async def _serve(settings: Settings, embedded_broker: bool, broker_port: int) -> None:
    import contextlib

    import uvicorn

    from bridge.runtime import BridgeRuntime

    async with contextlib.AsyncExitStack() as stack:
        if embedded_broker and not settings.mqtt_url:
            from device_adapters.mqtt.embedded_broker import EmbeddedBroker

            broker = await stack.enter_async_context(EmbeddedBroker(port=broker_port))
            settings = settings.model_copy(update={"mqtt_url": broker.url})
        runtime = BridgeRuntime(settings)
        config = uvicorn.Config(
            runtime.create_app(),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        await uvicorn.Server(config).serve()


# -- receiver -------------------------------------------------------------------------------------------
@app.command()
def receiver(
    port: Annotated[int, typer.Option(help="HTTP port")] = 8090,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    secret: Annotated[str | None, typer.Option(help="Webhook secret (default SOSBRIDGE_PLATFORM_SECRET)")] = None,
    jsonl: Annotated[Path, typer.Option(help="Where each contact is stored, one JSON line each")] = Path(
        "var/contacts.jsonl"
    ),
    bridge_url: Annotated[str | None, typer.Option(help="Bridge base URL for ack/resolve callbacks")] = None,
    platform_token: Annotated[str | None, typer.Option(help="Credential for the callbacks")] = None,
    ack_after: Annotated[float | None, typer.Option(help="Acknowledge each alert after this many seconds")] = 0.5,
    resolve_after: Annotated[float | None, typer.Option(help="Resolve this many seconds after the ack")] = None,
    no_auto_ack: Annotated[bool, typer.Option("--no-auto-ack", help="Only acknowledge on command")] = False,
    mode: Annotated[str, typer.Option(help="Start as normal, down (503) or slow")] = "normal",
    slow_s: Annotated[float, typer.Option(help="Delay of each answer in slow mode")] = 5.0,
) -> None:
    """Run the reference contact platform: verify, validate, store as JSONL, acknowledge."""
    import uvicorn

    from bridge.logs import configure_logging
    from bridge.receiver import Receiver

    configure_logging("INFO")
    rx = Receiver(
        secret or os.environ.get("SOSBRIDGE_PLATFORM_SECRET", "change-me"),
        jsonl_path=jsonl,
        bridge_url=bridge_url or os.environ.get("SOSBRIDGE_PUBLIC_URL"),
        platform_token=platform_token or os.environ.get("SOSBRIDGE_PLATFORM_TOKEN"),
        auto_ack_s=None if no_auto_ack else ack_after,
        auto_resolve_s=resolve_after,
    )
    if mode not in ("normal", "down", "slow"):
        raise typer.BadParameter("mode is normal, down or slow")
    rx.mode, rx.slow_s = mode, slow_s  # type: ignore[assignment]
    uvicorn.run(rx.create_app(), host=host, port=port, log_level="warning", access_log=False)


# -- devices --------------------------------------------------------------------------------------------
def _with_store(settings: Settings, fn: Any) -> Any:
    from bridge.store import make_store

    async def run() -> Any:
        store = make_store(settings)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


@devices_app.command("add")
def devices_add(
    device_id: Annotated[str, typer.Argument(help="Device id, e.g. watch-0042")],
    config: ConfigOpt = None,
    tenant: Annotated[str, typer.Option(help="Tenant (force area, service)")] = "default",
    profile: Annotated[str | None, typer.Option(help="Device profile id")] = None,
    label: Annotated[str | None, typer.Option(help="Human label")] = None,
    name: Annotated[str | None, typer.Option(help="Wearer's name")] = None,
    phone: Annotated[str | None, typer.Option(help="Wearer's phone number")] = None,
    language: Annotated[str | None, typer.Option(help="Wearer's language (BCP 47, e.g. gd, pl, en-GB)")] = None,
    need: Annotated[list[str] | None, typer.Option(help='Communication need, e.g. "deaf: text only"')] = None,
    notes: Annotated[str | None, typer.Option(help="Vulnerability notes")] = None,
    lat: Annotated[float | None, typer.Option(help="Registered address latitude")] = None,
    lon: Annotated[float | None, typer.Option(help="Registered address longitude")] = None,
    address: Annotated[str | None, typer.Option(help="Registered address, one line")] = None,
    postcode: Annotated[str | None, typer.Option(help="Registered address postcode")] = None,
    identifier: Annotated[list[str] | None, typer.Option(help="Transport identity scheme=value")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token (generated when omitted)")] = None,
    exercise: Annotated[bool, typer.Option(help="Mark every alert from it as an exercise")] = False,
) -> None:
    """Register (or update) a device and print its bearer token once."""
    from bridge.model import CivicAddress, Device, Location, Person

    settings = _settings(config)
    identifiers = dict(item.split("=", 1) for item in identifier or [])
    registered = None
    if (lat is not None and lon is not None) or address or postcode:
        civic = CivicAddress(a6=address, pc=postcode) if (address or postcode) else None
        registered = Location(
            lat=lat, lon=lon, source="registered_address", accuracy_m=50 if lat else None, civic=civic
        )
    person = Person(
        name=name, phone=phone, language=language, communication_needs=need or [], vulnerability_notes=notes
    )
    device = Device(
        device_id=device_id,
        tenant_id=tenant,
        profile_id=profile,
        label=label,
        person=person,
        registered_address=registered,
        identifiers=identifiers,
        status="exercise" if exercise else "actual",
    )
    secret = token or secrets.token_urlsafe(24)

    async def add(store: Any) -> None:
        await store.put_device(device)
        await store.set_credential(device_id, "token", secret)

    _with_store(settings, add)
    console.print(f"registered [bold]{device_id}[/bold]; token (shown once): {secret}")


@devices_app.command("coap-key")
def devices_coap_key(
    device_id: str,
    config: ConfigOpt = None,
    key: Annotated[str | None, typer.Option(help="Hex key (generated when omitted)")] = None,
) -> None:
    """Give a device its CoAP HMAC key (for devices without OSCORE); prints it once."""
    settings = _settings(config)
    secret = key or secrets.token_hex(32)
    bytes.fromhex(secret)  # a typo must fail here, not at the device's first alert

    async def store_key(store: Any) -> None:
        if await store.get_device(device_id) is None:
            raise typer.BadParameter(f"device {device_id!r} is not registered")
        await store.set_credential(device_id, "coap_hmac", secret, hashed=False)

    _with_store(settings, store_key)
    console.print(f"{device_id}: CoAP HMAC key (shown once): {secret}")


@devices_app.command("dc09-key")
def devices_dc09_key(
    device_id: str,
    key: Annotated[str, typer.Argument(help="The panel's AES key: 16/24/32 characters, or hex:<32/48/64 digits>")],
    config: ConfigOpt = None,
) -> None:
    """Give a SIA DC-09 account its AES key (docs/transports/dc09.md); plain messages are then refused."""
    from bridge.decoding import DecodeError
    from device_adapters.decoders.dc09 import parse_key

    settings = _settings(config)
    try:
        parse_key(key)  # a typo must fail here, not at the panel's first alarm
    except DecodeError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def store_key(store: Any) -> None:
        if await store.get_device(device_id) is None:
            raise typer.BadParameter(f"device {device_id!r} is not registered")
        await store.set_credential(device_id, "dc09_key", key, hashed=False)

    _with_store(settings, store_key)
    console.print(f"{device_id}: DC-09 AES key stored")


@devices_app.command("oscore")
def devices_oscore(
    device_id: str,
    config: ConfigOpt = None,
    sender_id: Annotated[str, typer.Option(help="The bridge's OSCORE Sender ID (hex)")] = "b1",
    recipient_id: Annotated[str, typer.Option(help="The device's Sender ID, the kid it sends (hex)")] = "",
    master_secret: Annotated[str | None, typer.Option(help="Hex master secret (generated when omitted)")] = None,
    master_salt: Annotated[str | None, typer.Option(help="Hex master salt (generated when omitted)")] = None,
) -> None:
    """Give a device an OSCORE security context (RFC 8613); prints the device's side once."""
    from device_adapters.coap.oscore import OscoreMaterial, register_oscore_device

    settings = _settings(config)
    material = OscoreMaterial(
        sender_id=sender_id,
        recipient_id=recipient_id or secrets.token_hex(2),
        master_secret=master_secret or secrets.token_hex(16),
        master_salt=master_salt or secrets.token_hex(8),
    )
    try:
        _with_store(settings, lambda store: register_oscore_device(store, device_id, material))
    except KeyError:
        raise typer.BadParameter(f"device {device_id!r} is not registered") from None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"{device_id}: OSCORE context registered; the device's side (shown once):")
    sys.stdout.write(material.reversed().model_dump_json() + "\n")


@devices_app.command("list")
def devices_list(config: ConfigOpt = None, tenant: Annotated[str | None, typer.Option()] = None) -> None:
    """List registered devices."""
    settings = _settings(config)
    devices = _with_store(settings, lambda store: store.list_devices(tenant))
    table = Table("device", "tenant", "profile", "label", "language", "needs", "status")
    for d in devices:
        person = d.person
        table.add_row(
            d.device_id,
            d.tenant_id,
            d.profile_id or "",
            d.label or "",
            (person.language if person else None) or "",
            "; ".join(person.communication_needs) if person else "",
            d.status,
        )
    console.print(table)


@devices_app.command("remove")
def devices_remove(device_id: str, config: ConfigOpt = None) -> None:
    """Remove a device and its credentials."""
    settings = _settings(config)
    removed = _with_store(settings, lambda store: store.remove_device(device_id))
    if not removed:
        console.print(f"no device {device_id!r}")
        raise typer.Exit(1)
    console.print(f"removed {device_id}")


# -- schema and profiles ---------------------------------------------------------------------------------
@app.command()
def schema() -> None:
    """Print the JSON Schema of the contact envelope sosbridge.contact/1."""
    from bridge.contact import contact_json_schema_text

    sys.stdout.write(contact_json_schema_text() + "\n")


@profiles_app.command("list")
def profiles_list(config: ConfigOpt = None) -> None:
    """List the device profiles in use (built-ins and extra directories)."""
    from bridge.profiles import ProfileRegistry

    settings = _settings(config)
    registry = ProfileRegistry.load(settings.profile_dirs.split(os.pathsep) if settings.profile_dirs else [])
    table = Table("id", "vendor", "model", "transport", "decoder", "kinds", "samples", "file")
    for pid, p in sorted(registry.profiles.items()):
        table.add_row(
            pid,
            p.vendor,
            p.model,
            p.transport,
            p.decoder,
            ", ".join(k.value for k in p.kinds),
            str(len(p.samples)),
            str(registry.origins[pid]),
        )
    console.print(table)


@profiles_app.command("check")
def profiles_check(file: Path) -> None:
    """Validate a profile file, run its samples and print expected against actual."""
    from bridge.profiles import ProfileError, check_profile, load_profile_file

    try:
        profile = load_profile_file(file)
    except ProfileError as exc:
        console.print(f"[red]invalid profile[/red]: {exc}")
        raise typer.Exit(2) from None
    results = check_profile(profile)
    table = Table("sample", "expected", "actual", "result")
    for r in results:
        actual = r.error if r.error else json.dumps(r.actual, default=str)
        table.add_row(
            r.sample, json.dumps(r.expected, default=str), actual, "[green]ok[/green]" if r.ok else "[red]FAIL[/red]"
        )
    console.print(table)
    failed = sum(not r.ok for r in results)
    console.print(f"{profile.id}: {len(results) - failed} passed, {failed} failed")
    if failed or not results:
        raise typer.Exit(1)


# -- demo -----------------------------------------------------------------------------------------------
@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the temporary data directory")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every expected contact")] = 60.0,
) -> None:
    """Start everything embedded, send alerts from simulated devices, show the contacts that arrive."""
    from bridge.demo import run_demo

    ok = asyncio.run(run_demo(console, keep=keep, timeout=timeout))
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    try:
        from simulator.cli import sim_app

        app.add_typer(sim_app, name="sim")
    except ImportError:
        pass
    app()


if __name__ == "__main__":
    main()
