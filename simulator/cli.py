"""`sosbridge sim`: run scenarios and load against an embedded stack or a live bridge and receiver."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
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
) -> None:
    """Run a scenario and check that every expected contact arrived; exit 1 if any did not."""
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
    raise typer.Exit(0 if result.ok else 1)


@sim_app.command("load")
def load(
    devices: Annotated[int, typer.Option(help="Virtual wearables")] = 100,
    rate: Annotated[float, typer.Option(help="Alerts per second, all devices together")] = 50.0,
    duration: Annotated[float, typer.Option(help="Seconds of sending")] = 10.0,
    json_out: Annotated[Path | None, typer.Option(help="Write the report as JSON here")] = None,
) -> None:
    """Send alerts from many virtual wearables; report counts and end-to-end latency."""
    report = asyncio.run(_load(devices, rate, duration))
    summary = report.summary()
    table = Table("metric", "value", title="sim load")
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))
    raise typer.Exit(0 if report.lost == 0 else 1)


async def _load(devices: int, rate: float, duration: float) -> Any:
    from simulator.harness import embedded_stack
    from simulator.load import register_load_devices, run_load

    workdir = Path(tempfile.mkdtemp(prefix="sosbridge-load-"))
    try:
        async with embedded_stack(workdir, embedded_mqtt=False, auto_ack_s=0.0, auto_resolve_s=0.0) as stack:
            tokens = await register_load_devices(stack.bridge.runtime.store, devices)
            with Progress(
                TextColumn("sending"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("load", total=int(rate * duration))
                return await run_load(
                    stack.bridge.url,
                    stack.receiver,
                    tokens,
                    rate,
                    duration,
                    on_progress=lambda done, total: progress.update(task, completed=done),
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
