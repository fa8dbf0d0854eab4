"""`sosbridge` command line: the core's commands (serve, devices, profiles, schema); plug-ins add theirs
(sim, demo, receiver, alexa, the per-transport key commands) through the `sosbridge.commands` entry point
group, so the core never imports them. See docs/reference/cli.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bridge.app.cli_support import (
    CliError,
    CommandGroups,
    ConfigOpt,
    console,
    err_console,
    settings_from,
    with_store,
)
from bridge.app.config import ConfigError, Settings
from bridge.app.http_server import http_server_options
from bridge.app.security import check_serve
from bridge.infra.plugins import load_group

log = logging.getLogger("sosbridge.settings")
app = typer.Typer(help="SOS Bridge: wearables, panic buttons and voice assistants to the police.", no_args_is_help=True)
devices_app = typer.Typer(help="Register and manage devices (works on the local store).", no_args_is_help=True)
profiles_app = typer.Typer(help="Device profiles.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(profiles_app, name="profiles")



# -- serve ----------------------------------------------------------------------------------------------
@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port")] = None,
    embedded_broker: Annotated[bool, typer.Option(help="Run an in-process MQTT broker on 127.0.0.1")] = False,
    broker_port: Annotated[int, typer.Option(help="Port of the embedded broker")] = 1883,
    workers: Annotated[int | None, typer.Option(
        help="Processes: 2 or more sends to the platform from delivery processes (SOSBRIDGE_WORKERS); "
             "0 or unset: 2 with two CPUs, else 1")] = None,
) -> None:
    """Run the bridge: HTTP API, enabled adapters and the forwarder; prints a start-up summary."""
    from bridge.app.known_settings import unknown_variable_warnings
    from bridge.app.startup import preflight
    from bridge.infra.logs import configure_logging

    # `serve` starts the CoAP server unless the file or environment says otherwise (library and test
    # defaults leave it off).
    settings = settings_from(config, defaults={"coap_enabled": True}, http_host=host, http_port=port,
                             workers=workers)
    preflight(settings, embedded_broker, broker_port)  # one line and exit 2 on a clash, a short secret...
    configure_logging(settings.log_level)
    for warning in unknown_variable_warnings(os.environ):  # a misspelt SOSBRIDGE_* is said, never ignored
        log.warning(warning)
    check_serve(settings, embedded_broker)  # exit 2 on a default webhook secret and the like: bridge/security.py
    asyncio.run(_serve(settings, embedded_broker, broker_port))


def start_embedded_broker(port: int) -> Any:
    """The in-process MQTT broker a transport plug-in offers (`sosbridge.embedded_broker` entry points):
    an async context manager with a `url`."""
    brokers = load_group("sosbridge.embedded_broker")
    if not brokers:
        raise CliError("--embedded-broker: no installed transport offers an embedded MQTT broker")
    return brokers[0].obj(port=port)


async def _serve(settings: Settings, embedded_broker: bool, broker_port: int) -> None:
    import uvicorn

    from bridge.app.api.app import create_app
    from bridge.app.delivery_process import default_workers
    from bridge.app.runtime import BridgeRuntime
    from bridge.app.stopping import GracefulServer, drain_timeout

    async with contextlib.AsyncExitStack() as stack:
        if embedded_broker:
            broker = await stack.enter_async_context(start_embedded_broker(broker_port))
            settings = settings.model_copy(update={type(broker).setting: broker.url})  # its key: mqtt_url
        runtime = BridgeRuntime(settings, processes=settings.workers or default_workers())
        options = http_server_options(settings) | {"timeout_graceful_shutdown": drain_timeout(settings.stop_timeout_s)}
        config = uvicorn.Config(create_app(runtime), **options)
        server = GracefulServer(config, runtime.bus, settings.stop_timeout_s)  # bridge/app/stopping.py
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn exposes a flag, no event)
            await asyncio.sleep(0.05)
        if server.started:
            from bridge.app.startup import summary_lines

            lines = await summary_lines(runtime)
            sys.stdout.write("SOS Bridge is running (Ctrl-C stops it)\n" + "".join(f"  {x}\n" for x in lines))
            sys.stdout.flush()
            # The process, not the runtime: an embedded bridge (tests, the demo) must not freeze its host's heap.
            from bridge.infra.memory import settle_after_start

            settle_after_start()  # start-up garbage collected, the rest frozen, fewer collections
        await serving


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

    settings = settings_from(config)
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

    with_store(settings, add)
    console.print(f"registered [bold]{device_id}[/bold]; token (shown once): {secret}")
    from bridge.core.model import registration_warnings

    for warning in registration_warnings(device):
        console.print(f"[yellow]warning[/yellow]: {warning}", soft_wrap=True)
    _warn_unbound_schemes(settings, identifiers)


def _warn_unbound_schemes(settings: Settings, identifiers: dict[str, str]) -> None:
    """An identifier no transport or loaded profile looks devices up by: the device would never be found."""
    from bridge.devices.profiles import ProfileRegistry
    from bridge.infra.plugins import load_group
    from bridge.ingress.binding import bound_schemes

    if not identifiers:
        return
    registry = ProfileRegistry.load(settings.profile_dirs.split(os.pathsep) if settings.profile_dirs else [])
    plugins = frozenset(s for p in load_group("sosbridge.adapters") for s in getattr(p.obj, "schemes", ()) or ())
    known = bound_schemes(registry, plugins)
    for scheme in sorted(set(identifiers) - known):
        err_console.print(f"warning: no transport or loaded profile binds identifier scheme {scheme!r}: frames "
                          "will never be matched to this device (a profile binds one with a {" + scheme
                          + "} level in match.topic)")


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


@devices_app.command("list")
def devices_list(config: ConfigOpt = None, tenant: Annotated[str | None, typer.Option()] = None) -> None:
    """List registered devices."""
    settings = settings_from(config)
    devices = with_store(settings, lambda store: store.list_devices(tenant))
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

    settings = settings_from(config)
    try:
        rows = load_rows(file, _profile_ids(settings))
    except DeviceFileError as exc:
        raise CliError(str(exc)) from None
    started = time.monotonic()
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task("import", total=len(rows))
        result = with_store(
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

    settings = settings_from(config)
    if fmt not in (None, "jsonl", "csv"):
        raise CliError("--format: must be jsonl or csv")
    chosen = fmt or (detect_format(file, "{") if file else "jsonl")
    devices = with_store(settings, lambda store: store.list_devices(tenant))
    text = export_text(devices, chosen)  # type: ignore[arg-type]
    if file is None:
        sys.stdout.write(text)
        return
    file.write_text(text, encoding="utf-8")
    err_console.print(f"exported {len(devices)} devices to {file}", highlight=False)


@devices_app.command("remove")
def devices_remove(device_id: str, config: ConfigOpt = None) -> None:
    """Remove a device and its credentials."""
    settings = settings_from(config)
    removed = with_store(settings, lambda store: store.remove_device(device_id))
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

    settings = settings_from(config)
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
    from bridge.devices.profiles import ProfileError, load_profile_file
    from bridge.devices.samples import check_profile, profile_warnings

    try:
        profile = load_profile_file(file)
    except ProfileError as exc:
        console.print(f"[red]invalid profile[/red]: {exc}")
        raise typer.Exit(2) from None
    for warning in profile_warnings(profile):
        console.print(f"[yellow]warning[/yellow]: {warning}")
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
    from bridge.devices.decoding import DecodeError, Frame, decode_frame
    from bridge.devices.samples import summarise_event

    try:
        payload = bytes.fromhex(hex_text.replace(" ", "")) if hex_text is not None else (text or "").encode()
    except ValueError:
        raise CliError("--frame-hex: not hexadecimal") from None
    meta = dict(pair.split("=", 1) for pair in meta_pairs if "=" in pair)
    try:
        events = decode_frame(Frame(payload=payload, meta=meta), profile)
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


_plugins_added = False


def add_plugin_commands() -> None:
    """Each installed plug-in's commands (`sosbridge.commands` entry points: a callable given the groups).
    Once per process: the docs generator and `main` both ask."""
    global _plugins_added
    if _plugins_added:
        return
    _plugins_added = True
    groups = CommandGroups(root=app, devices=devices_app, profiles=profiles_app)
    for plugin in load_group("sosbridge.commands"):
        plugin.obj(groups)


def main() -> None:
    add_plugin_commands()
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
