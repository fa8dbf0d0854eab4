"""`sosbridge sim`: run scenarios and load against an embedded stack or a live bridge and receiver."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

sim_app = typer.Typer(help="Hardware simulator: scenarios, load and faults.", no_args_is_help=True)
console = Console(width=None if Console().is_terminal else 160)


@sim_app.command("list")
def list_scenarios() -> None:
    """List the built-in scenarios."""
    from simulator.scenario import SCENARIO_DIR, Scenario

    table = Table("scenario", "steps", "expected contacts", "description")
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        scenario = Scenario.load(path)
        table.add_row(path.stem, str(len(scenario.steps)), str(len(scenario.expected)), scenario.description.strip())
    console.print(table)


def _show_step(step: Any) -> None:
    console.print(f"[dim]▶ {step.title or step.action}[/dim]")


async def _run_embedded(scenario: Any, keep: bool) -> Any:
    from simulator.harness import stack_for
    from simulator.scenario import register_devices, run_scenario

    workdir = Path(tempfile.mkdtemp(prefix="sosbridge-sim-"))
    try:
        async with stack_for(scenario, workdir) as stack:
            ctx = stack.run_context()
            await register_devices(scenario, ctx, stack.bridge.runtime.store)
            return await run_scenario(
                scenario, ctx, on_step=lambda s: console.print(f"[dim]▶ {s.title or s.action}[/dim]")
            )
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


async def _run_remote(scenario: Any, bridge_url: str, receiver_url: str, admin_token: str, mqtt_url: str | None) -> Any:
    from bridge.app.config import Settings
    from simulator.remote import RemoteReceiver, RemoteRegistry
    from simulator.scenario import RunContext, register_devices, run_scenario

    registry = RemoteRegistry(bridge_url, admin_token)
    receiver = RemoteReceiver(receiver_url)
    settings = Settings(mqtt_url=mqtt_url)
    ctx = RunContext(bridge_url, receiver, settings)
    await register_devices(scenario, ctx, registry)
    ctx.tokens.update(registry.tokens)
    return await run_scenario(scenario, ctx, on_step=_show_step)


@sim_app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="Scenario file, or the name of a built-in one")],
    bridge_url: Annotated[
        str | None, typer.Option(help="Run against this live bridge instead of an embedded one")
    ] = None,
    receiver_url: Annotated[str | None, typer.Option(help="Base URL of the live reference receiver")] = None,
    admin_token: Annotated[str | None, typer.Option(help="The live bridge's admin token")] = None,
    mqtt_url: Annotated[str | None, typer.Option(help="Broker for MQTT steps against a live bridge")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the embedded stack's data directory")] = False,
    json_out: Annotated[Path | None, typer.Option(help="Write the result (with latencies) as JSON here")] = None,
) -> None:
    """Run a scenario and check that every expected contact arrived; exit 1 if any did not. Reports each
    device step's latency to the platform and to the device's answer (p50/p99)."""
    from simulator.scenario import Scenario

    loaded = Scenario.load(scenario)
    if bridge_url:
        if not (receiver_url and admin_token):
            raise typer.BadParameter("--bridge-url needs --receiver-url and --admin-token")
        result = asyncio.run(_run_remote(loaded, bridge_url, receiver_url, admin_token, mqtt_url))
    else:
        result = asyncio.run(_run_embedded(loaded, keep))
    for expected, contact in result.matched:
        console.print(f"[green]✓[/green] {expected.describe()}  →  {contact['contact_id']}")
    for missing in result.missing:
        console.print(f"[red]✗ missing[/red] {missing.describe()}")
    for extra in result.unexpected:
        console.print(f"[red]✗ unexpected[/red] {extra['device']['id']}: {extra['msg_type']} {extra['kind']}")
    if result.failed_step:
        console.print(f"[red]✗ step failed[/red] {result.failed_step}")
    failed = len(result.missing) + len(result.unexpected) + bool(result.failed_step)
    console.print(f"{loaded.name}: {len(result.matched)} passed, {failed} failed")
    summary = result.summary()
    for name, what in (("contact_ms", "send → contact at the platform"), ("answer_ms", "send → answer at the device")):
        got = summary["latency"][name]
        if got["n"]:
            console.print(f"latency {what}: p50 {got['p50']} ms, p99 {got['p99']} ms ({got['n']})", highlight=False)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))
    raise typer.Exit(0 if result.ok else 1)


@sim_app.command("load")
def load(
    devices: Annotated[int, typer.Option(help="Virtual devices of the embedded stack (one alert each)")] = 100,
    rate: Annotated[float, typer.Option(help="Alerts per second, all devices together")] = 50.0,
    duration: Annotated[float, typer.Option(help="Seconds of sending")] = 10.0,
    transport: Annotated[str, typer.Option(help="http, mqtt, coap, watch, dc09, serial or alexa")] = "http",
    bridge_url: Annotated[
        str | None, typer.Option(help="A live bridge (needs --devices-file and --receiver-url); default: embedded")
    ] = None,
    receiver_url: Annotated[
        str | None, typer.Option(help="The live platform's receiver, for delivery and latency")
    ] = None,
    devices_file: Annotated[
        Path | None, typer.Option(help="Devices with tokens (the `sosbridge devices import` format)")
    ] = None,
    mqtt_url: Annotated[str | None, typer.Option(help="Broker the devices publish to (--transport mqtt)")] = None,
    target: Annotated[
        str | None, typer.Option(help="HOST:PORT of the live bridge's CoAP, watch or DC-09 listener")
    ] = None,
    keys_file: Annotated[
        Path | None, typer.Option(help='JSON {device: {"coap_hmac": hex, "dc09_key": key}}, as the bridge has them')
    ] = None,
    serial_path: Annotated[
        Path | None, typer.Option(help="Where to create the pty the live bridge reads as `diy=PATH`")
    ] = None,
    speaker_dir: Annotated[
        Path | None, typer.Option(help="The smart speaker made by `sosbridge sim speaker` (--transport alexa)")
    ] = None,
    bridge_port: Annotated[int, typer.Option(help="Embedded bridge's HTTP port (0: any free one)")] = 0,
    receiver_port: Annotated[int, typer.Option(help="Embedded receiver's port (0: any free one)")] = 0,
    json_out: Annotated[Path | None, typer.Option(help="Write the report as JSON here")] = None,
) -> None:
    """Send alerts from many virtual devices; report counts, the achieved rate and end-to-end latency."""
    from simulator.load import TRANSPORTS

    if transport not in TRANSPORTS:
        raise typer.BadParameter(f"--transport must be one of {', '.join(TRANSPORTS)}")
    if bridge_url and not (devices_file and receiver_url):
        raise typer.BadParameter("--bridge-url needs --devices-file (tokens) and --receiver-url (the platform)")
    if transport == "mqtt" and bridge_url and not mqtt_url:
        raise typer.BadParameter("--transport mqtt against a live bridge needs --mqtt-url")
    wire = Wire(target, keys_file, serial_path, speaker_dir)
    if bridge_url:
        from simulator.load_kinds import KINDS, sender_for

        if transport in KINDS:
            try:
                sender_for(transport, bridge_url=bridge_url, target=target, serial_path=serial_path,
                           speaker_dir=speaker_dir)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
    try:
        report = asyncio.run(_load(devices, rate, duration, transport, bridge_url, receiver_url, devices_file,
                                   mqtt_url, bridge_port, receiver_port, wire))
    except (TimeoutError, OSError) as exc:  # the bridge never took the link (a serial port it does not read)
        print(f"sim load: {exc or type(exc).__name__}", file=sys.stderr)
        raise typer.Exit(2) from None
    summary = report.summary()
    table = Table("metric", "value", title=f"sim load ({transport})")
    for key, value in summary.items():
        if key != "warnings":
            table.add_row(key, str(value))
    console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))
    raise typer.Exit(0 if report.lost == 0 else 1)


@sim_app.command("speaker")
def speaker(directory: Annotated[Path, typer.Argument(help="Where to keep the speaker's keys (0700)")]) -> None:
    """Make a virtual smart speaker for `sim load --transport alexa`; print the bridge settings that trust it."""
    from simulator.devices.alexa import SmartSpeaker

    env = SmartSpeaker.create().save(directory)
    for name, value in env.items():
        print(f"{name}={value}")


@dataclass(frozen=True)
class Wire:
    """Where a device kind's frames go (live bridge) and what it needs to send them."""

    target: str | None = None
    keys_file: Path | None = None
    serial_path: Path | None = None
    speaker_dir: Path | None = None


def _progress() -> Progress:
    return Progress(TextColumn("sent"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), console=console)


async def _load(devices: int, rate: float, duration: float, transport: str, bridge_url: str | None,
                receiver_url: str | None, devices_file: Path | None, mqtt_url: str | None, bridge_port: int,
                receiver_port: int, wire: Wire) -> Any:
    from simulator.load import devices_from_file, register_load_devices, run_load
    from simulator.load_kinds import KINDS, sender_for
    from simulator.remote import RemoteReceiver

    if bridge_url and receiver_url and devices_file:
        targets = devices_from_file(devices_file, wire.keys_file)
        sender = sender_for(transport, bridge_url=bridge_url, target=wire.target, serial_path=wire.serial_path,
                            speaker_dir=wire.speaker_dir) if transport in KINDS else None
        with _progress() as progress:
            task = progress.add_task("load", total=min(len(targets), int(rate * duration)))
            return await run_load(bridge_url, RemoteReceiver(receiver_url), targets, rate, duration, transport,
                                  mqtt_url, on_progress=lambda done, total: progress.update(task, completed=done),
                                  sender=sender)
    from simulator.harness import embedded_stack, patched_environ

    workdir = Path(tempfile.mkdtemp(prefix="sosbridge-load-"))
    try:
        pinned: dict[str, Any] = {"http_port": bridge_port} if bridge_port else {}
        environ: dict[str, str] = {}
        if transport == "serial":
            pinned["serial_ports"] = f"diy={workdir / 'tty-load'}"
        if transport == "alexa":
            from simulator.devices.alexa import SmartSpeaker

            environ = SmartSpeaker.create().save(workdir / "speaker")
        with patched_environ(environ):
            async with embedded_stack(workdir, mqtt_url=mqtt_url, embedded_mqtt=transport == "mqtt", auto_ack_s=0.0,
                                      auto_resolve_s=0.0, receiver_port=receiver_port, **pinned) as stack:
                targets = await register_load_devices(stack.bridge.runtime.store, devices, transport)
                sender = None
                if transport in KINDS:
                    port = {"coap": stack.settings.coap_port, "watch": stack.settings.watch_port,
                            "dc09": stack.settings.dc09_port}.get(transport)
                    sender = sender_for(transport, bridge_url=stack.bridge.url, target=f"127.0.0.1:{port}",
                                        serial_path=workdir / "tty-load", speaker_dir=workdir / "speaker")
                with _progress() as progress:
                    task = progress.add_task("load", total=min(len(targets), int(rate * duration)))
                    return await run_load(stack.bridge.url, stack.receiver, targets, rate, duration, transport,
                                          stack.mqtt_url,
                                          on_progress=lambda done, total: progress.update(task, completed=done),
                                          sender=sender)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
