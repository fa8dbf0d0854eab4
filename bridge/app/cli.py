"""`sosbridge` command line: serve, receiver, devices, profiles, schema, demo, sim."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bridge.app.config import ConfigError, Settings, default_data_dir, load_settings
from bridge.app.security import check_receiver, check_serve, http_server_options
from bridge.infra.interrupt import run_interruptible

app = typer.Typer(help="SOS Bridge: wearables, panic buttons and voice assistants to the police.", no_args_is_help=True)
devices_app = typer.Typer(help="Register and manage devices (works on the local store).", no_args_is_help=True)
profiles_app = typer.Typer(help="Device profiles.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(profiles_app, name="profiles")

console = Console(width=None if Console().is_terminal else 160)
err_console = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 160)
ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="TOML configuration file (the same as SOSBRIDGE_CONFIG)")
]


class CliError(Exception):
    """A usage problem reported as one line on stderr with exit code 2 (no traceback)."""


def _settings(config: str | None, defaults: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    return load_settings(config, defaults=defaults, **{k: v for k, v in overrides.items() if v is not None})


# -- serve ----------------------------------------------------------------------------------------------
@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port")] = None,
    embedded_broker: Annotated[bool, typer.Option(help="Run an in-process MQTT broker on 127.0.0.1")] = False,
    broker_port: Annotated[int, typer.Option(help="Port of the embedded broker")] = 1883,
) -> None:
    """Run the bridge: HTTP API, enabled adapters and the forwarder; prints a start-up summary."""
    from bridge.app.startup import check_port_free, preflight
    from bridge.infra.logs import configure_logging

    # `serve` starts the CoAP server unless the file or environment says otherwise (library and test
    # defaults leave it off).
    settings = _settings(config, defaults={"coap_enabled": True}, http_host=host, http_port=port)
    preflight(settings)
    if embedded_broker and not settings.mqtt_url:
        check_port_free("--broker-port", "127.0.0.1", broker_port)
    configure_logging(settings.log_level)
    check_serve(settings, embedded_broker)  # exit 2 on a default webhook secret and the like: bridge/security.py
    asyncio.run(_serve(settings, embedded_broker, broker_port))


async def _serve(settings: Settings, embedded_broker: bool, broker_port: int) -> None:
    import uvicorn

    from bridge.app.runtime import BridgeRuntime

    async with contextlib.AsyncExitStack() as stack:
        if embedded_broker and not settings.mqtt_url:
            from device_adapters.mqtt.embedded_broker import EmbeddedBroker

            broker = await stack.enter_async_context(EmbeddedBroker(port=broker_port))
            settings = settings.model_copy(update={"mqtt_url": broker.url})
        runtime = BridgeRuntime(settings)
        config = uvicorn.Config(runtime.create_app(), **http_server_options(settings))
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn exposes a flag, no event)
            await asyncio.sleep(0.05)
        if server.started:
            from bridge.app.startup import summary_lines

            lines = await summary_lines(runtime)
            sys.stdout.write("SOS Bridge is running (Ctrl-C stops it)\n" + "".join(f"  {x}\n" for x in lines))
            sys.stdout.flush()
        await serving


# -- receiver -------------------------------------------------------------------------------------------
@app.command()
def receiver(
    port: Annotated[int, typer.Option(help="HTTP port")] = 8090,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    secret: Annotated[str | None, typer.Option(help="Webhook secret (default SOSBRIDGE_PLATFORM_SECRET)")] = None,
    jsonl: Annotated[
        Path | None,
        typer.Option(help="Where each contact is stored, one JSON line each [default: <data dir>/contacts.jsonl]"),
    ] = None,
    bridge_url: Annotated[str | None, typer.Option(help="Bridge base URL for ack/resolve callbacks")] = None,
    platform_token: Annotated[
        str | None, typer.Option(help="Credential for the bridge's callbacks (default: $SOSBRIDGE_PLATFORM_TOKEN)")
    ] = None,
    ack_after: Annotated[float | None, typer.Option(help="Acknowledge each alert after this many seconds")] = 0.5,
    resolve_after: Annotated[float | None, typer.Option(help="Resolve this many seconds after the ack")] = None,
    no_auto_ack: Annotated[bool, typer.Option("--no-auto-ack", help="Only acknowledge on command")] = False,
    mode: Annotated[str, typer.Option(help="Start as normal, down (503) or slow")] = "normal",
    slow_s: Annotated[float, typer.Option(help="Delay of each answer in slow mode")] = 5.0,
    control_token: Annotated[
        str | None, typer.Option(help="Bearer token for GET /contacts and /control/* (open when unset)")
    ] = None,
) -> None:
    """Run the reference contact platform: verify, validate, store as JSONL, acknowledge."""
    import uvicorn

    from bridge.infra.logs import configure_logging
    from simulator.platform.receiver import Receiver

    configure_logging("INFO")
    secret = check_receiver(secret or os.environ.get("SOSBRIDGE_PLATFORM_SECRET"), host, control_token)
    jsonl = jsonl or Path(os.environ.get("SOSBRIDGE_DATA_DIR") or default_data_dir()) / "contacts.jsonl"
    rx = Receiver(
        secret,
        jsonl_path=jsonl,
        bridge_url=bridge_url or os.environ.get("SOSBRIDGE_PUBLIC_URL"),
        platform_token=platform_token or os.environ.get("SOSBRIDGE_PLATFORM_TOKEN"),
        auto_ack_s=None if no_auto_ack else ack_after,
        auto_resolve_s=resolve_after,
        control_token=control_token,
    )
    if mode not in ("normal", "down", "slow"):
        raise CliError("--mode: must be normal, down or slow")
    rx.mode, rx.slow_s = mode, slow_s  # type: ignore[assignment]
    from bridge.app.startup import check_port_free
    from simulator.platform.report import WebhookReport, banner

    check_port_free("--port", host, port)
    sys.stdout.write("\n".join(banner(host, port, jsonl)) + "\n")
    sys.stdout.flush()
    uvicorn.run(WebhookReport(rx.create_app()), host=host, port=port, log_level="warning", access_log=False)


# -- devices --------------------------------------------------------------------------------------------
def _with_store(settings: Settings, fn: Any) -> Any:
    """Run `fn(store)` on the configured store; says on stderr which store it is (stdout stays data)."""
    from bridge.store import StoreError, make_store

    err_console.print(f"store: {settings.store_description()}", highlight=False, soft_wrap=True)

    async def run() -> Any:
        store = make_store(settings)
        try:
            await store.open()
        except Exception as exc:
            raise _store_error(settings, "cannot open the store", exc) from None
        try:
            return await fn(store)
        except (StoreError, OSError) as exc:
            raise _store_error(settings, "the store failed", exc) from None
        finally:
            with contextlib.suppress(Exception):
                await store.close()

    return run_interruptible(run())


def _store_error(settings: Settings, what: str, exc: BaseException) -> ConfigError:
    setting = "SOSBRIDGE_REDIS_URL" if settings.redis_url else "SOSBRIDGE_DB"
    return ConfigError(setting, f"{what} ({settings.store_description()}): {exc}")


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
    check_in_interval: Annotated[
        int | None, typer.Option(min=1, help="Seconds between the device's check-ins; a missed one raises an alert")
    ] = None,
    gateway: Annotated[
        str | None, typer.Option(help="Device id of the gateway (hub) it reaches the bridge through")
    ] = None,
    sms_replies: Annotated[
        bool, typer.Option(help="Text the alert's state back to its msisdn (GSM trackers; never for silent alerts)")
    ] = False,
    audible_on_silent: Annotated[
        bool, typer.Option(help="Let the platform ask for a spoken or texted message even on a silent or duress "
                                "alert (off: whoever threatens the person may hear it; docs/platform/messages.md)")
    ] = False,
    emergency_contact: Annotated[
        list[str] | None,
        typer.Option(
            help='The person\'s own emergency contact as JSON, repeatable: \'{"name": "Ann", "relation": "daughter", '
            '"email": "ann@example.org"}\' (docs/operations/emergency-contacts.md; never told about silent '
            "alerts unless \"notify_silent\": true)"
        ),
    ] = None,
) -> None:
    """Register (or update) a device and print its bearer token once."""
    from pydantic import ValidationError

    from bridge.core.model import CivicAddress, Device, EmergencyContact, Location, Person

    settings = _settings(config)
    if profile is not None:
        _require_profiles(settings, {profile})
    bad = [item for item in identifier or [] if "=" not in item]
    if bad:
        raise CliError(f"--identifier: {bad[0]!r} is not scheme=value")
    identifiers = dict(item.split("=", 1) for item in identifier or [])
    registered = None
    if (lat is not None and lon is not None) or address or postcode:
        civic = CivicAddress(a6=address, pc=postcode) if (address or postcode) else None
        registered = Location(
            lat=lat, lon=lon, source="registered_address", accuracy_m=50 if lat else None, civic=civic
        )
    carers: list[EmergencyContact] = []
    for i, text in enumerate(emergency_contact or [], 1):
        try:
            carers.append(EmergencyContact.model_validate_json(text))
        except ValidationError as exc:
            why = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
            raise CliError(f"--emergency-contact #{i}: {why}") from None
    person = Person(
        name=name, phone=phone, language=language, communication_needs=need or [], vulnerability_notes=notes,
        emergency_contacts=carers,
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
        check_in_interval_s=check_in_interval,
        gateway_id=gateway,
        sms_replies=sms_replies,
        audible_on_silent=audible_on_silent,
    )
    if token is not None and not 16 <= len(token) <= 200:
        raise CliError("--token: a device token has 16 to 200 characters (as the registry API requires)")
    secret = token or secrets.token_urlsafe(24)

    async def add(store: Any) -> None:
        await store.put_device(device)
        await store.set_credential(device_id, "token", secret)

    _with_store(settings, add)
    console.print(f"registered [bold]{device_id}[/bold]; token (shown once): {secret}")


def _profile_ids(settings: Settings) -> set[str]:
    from bridge.devices.profiles import ProfileRegistry

    return set(ProfileRegistry.load(settings.profile_dirs.split(os.pathsep) if settings.profile_dirs else []).profiles)


def _require_profiles(settings: Settings, wanted: set[str]) -> None:
    """CliError unless every profile id exists: a device with an unknown profile has every press refused."""
    known = _profile_ids(settings)
    unknown = sorted(wanted - known)
    if unknown:
        names = ", ".join(sorted(known))
        raise CliError(f"--profile: unknown profile {unknown[0]!r} (see `sosbridge profiles list`; known: {names})")


@devices_app.command("coap-key")
def devices_coap_key(
    device_id: str,
    config: ConfigOpt = None,
    key: Annotated[str | None, typer.Option(help="Hex key (generated when omitted)")] = None,
) -> None:
    """Give a device its CoAP HMAC key (for devices without OSCORE); prints it once."""
    settings = _settings(config)
    secret = key or secrets.token_hex(32)
    try:
        bytes.fromhex(secret)  # a typo must fail here, not at the device's first alert
    except ValueError:
        raise CliError("--key: not a hex string") from None

    async def store_key(store: Any) -> None:
        if await store.get_device(device_id) is None:
            raise CliError(f"device {device_id!r} is not registered")
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
    from bridge.devices.decoding import DecodeError
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
        raise CliError(f"device {device_id!r} is not registered") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
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


@devices_app.command("import")
def devices_import(
    file: Annotated[Path, typer.Argument(help="JSON Lines (.jsonl) or CSV (.csv) file of devices")],
    config: ConfigOpt = None,
    tokens_out: Annotated[
        Path | None,
        typer.Option(help="Where the tokens generated for new devices without one go [default: FILE.tokens.csv]"),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Devices written per store transaction")] = 1000,
) -> None:
    """Register or update many devices from a file; running it again changes nothing (idempotent)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bridge.devices.device_files import DeviceFileError
    from bridge.devices.device_import import import_rows, load_rows, write_tokens

    settings = _settings(config)
    try:
        rows = load_rows(file, _profile_ids(settings))
    except DeviceFileError as exc:
        raise CliError(str(exc)) from None
    started = time.monotonic()
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task("import", total=len(rows))
        result = _with_store(
            settings, lambda store: import_rows(store, rows, batch, lambda n: bar.advance(task, n))
        )
    elapsed = time.monotonic() - started
    err_console.print(
        f"{file}: {result.created} devices created, {result.updated} updated, {result.unchanged} unchanged in "
        f"{elapsed:.1f} s", highlight=False
    )
    if result.generated_tokens:
        out = tokens_out or file.with_name(file.name + ".tokens.csv")
        write_tokens(out, result.generated_tokens)
        err_console.print(
            f"{len(result.generated_tokens)} new devices had no token: generated tokens written to {out} "
            "(shown nowhere else; give each to its device, then delete the file)",
            highlight=False,
        )


@devices_app.command("export")
def devices_export(
    file: Annotated[Path | None, typer.Argument(help="Output file (.jsonl or .csv); stdout when omitted")] = None,
    config: ConfigOpt = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's devices")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl or csv [default: from FILE, else jsonl]")] = None,
) -> None:
    """Write the registry as JSON Lines or CSV (importable again; tokens are never exported)."""
    from bridge.devices.device_files import detect_format, export_text

    settings = _settings(config)
    if fmt not in (None, "jsonl", "csv"):
        raise CliError("--format: must be jsonl or csv")
    chosen = fmt or (detect_format(file, "{") if file else "jsonl")
    devices = _with_store(settings, lambda store: store.list_devices(tenant))
    text = export_text(devices, chosen)  # type: ignore[arg-type]
    if file is None:
        sys.stdout.write(text)
        return
    file.write_text(text, encoding="utf-8")
    err_console.print(f"exported {len(devices)} devices to {file}", highlight=False)


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
    from bridge.core.contact import contact_json_schema_text

    sys.stdout.write(contact_json_schema_text() + "\n")


@profiles_app.command("list")
def profiles_list(
    config: ConfigOpt = None,
    ids: Annotated[bool, typer.Option("--ids", help="Only the profile ids, one a line")] = False,
) -> None:
    """List the device profiles in use (built-ins and extra directories)."""
    from bridge.devices.profiles import ProfileRegistry

    settings = _settings(config)
    registry = ProfileRegistry.load(settings.profile_dirs.split(os.pathsep) if settings.profile_dirs else [])
    if ids:
        sys.stdout.write("".join(f"{pid}\n" for pid in sorted(registry.profiles)))
        return
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
def profiles_check(
    file: Path,
    frame: Annotated[str | None, typer.Option(help="Also decode this frame (text; JSON for JSON profiles)")] = None,
    frame_hex: Annotated[str | None, typer.Option(help="Also decode this binary frame, given as hex")] = None,
    meta: Annotated[
        list[str] | None, typer.Option(help="Frame metadata KEY=VALUE (topic, port ...); repeatable")
    ] = None,
) -> None:
    """Validate a profile file, run its samples and print expected against actual; with --frame, show what
    one frame decodes to (an unmatched frame is reported as the bridge would count it)."""
    from bridge.devices.profiles import ProfileError, check_profile, load_profile_file

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
    if frame is not None or frame_hex is not None:
        if not _check_frame(profile, frame, frame_hex, meta or []):
            raise typer.Exit(1)
    if failed or not results:
        raise typer.Exit(1)


def _check_frame(profile: Any, text: str | None, hex_text: str | None, meta_pairs: list[str]) -> bool:
    """Decode one frame with the profile; False when it is malformed or matches no mapping."""
    from bridge.devices.decoding import DecodeError, Frame, get_decoder
    from bridge.devices.profiles import summarise_event

    try:
        payload = bytes.fromhex(hex_text.replace(" ", "")) if hex_text is not None else (text or "").encode()
    except ValueError:
        raise CliError("--frame-hex: not hexadecimal") from None
    meta = dict(pair.split("=", 1) for pair in meta_pairs if "=" in pair)
    try:
        events = get_decoder(profile.decoder)(Frame(payload=payload, meta=meta), profile)
    except DecodeError as exc:
        console.print(f"frame: [red]refused[/red] (invalid): {exc}")
        return False
    if [e.action for e in events] == ["unmatched"]:
        console.print(f"frame: [yellow]unmatched[/yellow]: no mapping of {profile.id} covers it (the bridge counts "
                      f"it in sosbridge_frames_unmatched_total{{profile=\"{profile.id}\"}} and tells the sender)")
        return False
    if not events:
        console.print("frame: ignored (understood; not an event)")
        return True
    for event in events:
        console.print("frame: " + json.dumps(summarise_event(event), default=str))
    return True


# -- demo -----------------------------------------------------------------------------------------------
@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the temporary data directory")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every expected contact")] = 60.0,
    stay: Annotated[bool, typer.Option(help="Keep everything running afterwards, with the operator console "
                                             "open, until Ctrl-C")] = False,
) -> None:
    """Start everything embedded, send alerts from simulated devices, show the contacts that arrive."""
    from simulator.demo import run_demo

    ok = run_interruptible(run_demo(console, keep=keep, timeout=timeout, stay=stay))
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    from skills.alexa.cli import alexa_app  # sosbridge alexa cache-cert URL FILE

    app.add_typer(alexa_app, name="alexa")
    try:
        from simulator.cli import sim_app

        app.add_typer(sim_app, name="sim")
    except ImportError:
        pass
    try:
        app()
    except (ConfigError, CliError) as exc:
        # One line naming the setting; never a traceback for a configuration or usage problem.
        sys.stderr.write(f"sosbridge: error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
