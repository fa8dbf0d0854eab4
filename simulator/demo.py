"""`sosbridge demo`: everything embedded on temporary storage, the showcase scenario, contacts on screen."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from bridge.app.embedded import EmbeddedBridge
from bridge.core.messages import conversation, deliveries
from simulator.devices.carer import SCRATCH_KEY as CARER_PHONE
from simulator.devices.carer import CarerPhone
from simulator.harness import stack_for
from simulator.platform.receiver import EmbeddedReceiver
from simulator.redis_server import RedisNotInstalled, throwaway_redis

if TYPE_CHECKING:
    from simulator.scenario import Scenario, Step


def contact_row(contact: dict[str, Any]) -> list[str]:
    loc = contact.get("location") or {}
    where = ""
    if loc.get("lat") is not None:
        acc = f" ±{loc['accuracy_m']:.0f} m" if loc.get("accuracy_m") is not None else ""
        point = loc.get("grid_ref") or f"{loc['lat']:.4f},{loc['lon']:.4f}"
        where = f"{point}{acc} ({loc.get('source')})"
    elif loc.get("civic"):
        where = f"{loc['civic'].get('a3') or ''} ({loc.get('source')})"
    needs = "; ".join(contact.get("communication_needs") or [])
    return [
        time.strftime("%H:%M:%S", time.localtime()),
        contact["device"]["id"],
        contact["device"]["transport"],
        contact["msg_type"],
        contact["kind"] + (" (silent)" if contact.get("silent") else ""),
        contact["severity"],
        where,
        contact.get("language") or "",
        needs,
        contact["status"],
    ]


COLUMNS = ["time", "device", "via", "type", "kind", "severity", "where", "lang", "needs", "status"]


async def run_demo(
    console: Console, keep: bool = False, timeout: float = 60.0, scenario_name: str = "showcase",
    stay: bool = False, intake_workers: int = 0, redis_url: str | None = None,
) -> bool:
    """Run the scenario and show what arrived; with `stay`, keep everything running afterwards (so an
    audience can open the operator console and text the callers) until Ctrl-C. `intake_workers`: every
    frame goes through that many intake processes on Redis (`redis_url`, else a redis-server of the demo's
    own), as `SOSBRIDGE_INTAKE_WORKERS` does for `sosbridge serve`."""
    from simulator.scenario import Scenario

    logging.getLogger().setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="sosbridge-demo-"))
    scenario = Scenario.load(scenario_name)
    scenario.timeout_s = timeout
    ok = False
    try:
        with contextlib.ExitStack() as services:
            scale: dict[str, Any] = {}
            if intake_workers:
                try:
                    url = redis_url or services.enter_context(throwaway_redis(workdir))
                except RedisNotInstalled as exc:
                    console.print(f"[red]{exc}[/red]")
                    return False
                # The intake processes log as `sosbridge serve` would; the demo keeps its screen to errors.
                scale = {"redis_url": url, "intake_workers": intake_workers, "log_level": "ERROR"}
            ok = await _run(console, scenario, workdir, stay, scale)
    finally:
        if keep:
            console.print(f"data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return ok


async def _run(console: Console, scenario: Scenario, workdir: Path, stay: bool, scale: dict[str, Any]) -> bool:
    """The demo itself, on the stack the scenario needs (`scale`: the intake processes' settings)."""
    from simulator.scenario import register_devices, run_scenario

    async with stack_for(scenario, workdir, conveyance=True, **scale) as stack:
        eb, rx = stack.bridge, stack.receiver
        console.rule("[bold]SOS Bridge demo[/bold]")
        console.print(
            f"bridge {eb.url}  ·  contact platform {rx.url} (operator console: {rx.base_url}/)  ·  adapters: "
            f"{', '.join(eb.runtime.started_adapters)}  ·  data {workdir}"
        )
        intake = eb.runtime.intake_processes
        if intake is not None:
            pids = ", ".join(str(pid) for pid in intake.pids if pid is not None)
            console.print(f"intake processes: {intake.count} (pids {pids}), every frame stored by one of them in "
                          f"{stack.settings.store_description()}")
        ctx = stack.run_context()
        await register_devices(scenario, ctx, eb.runtime.store)
        phone: CarerPhone | None = ctx.scratch.get(CARER_PHONE)
        if phone is not None:
            console.print(f"emergency contacts (family, carers) are told by webhook at {phone.url}")
        printer = asyncio.create_task(_print_contacts(console, rx))

        def on_step(step: Step) -> None:
            console.print(f"[dim]▶ {step.title or step.action} ({step.device or ''})[/dim]")

        result = await run_scenario(scenario, ctx, on_step=on_step)
        await asyncio.sleep(0.2)
        printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
        table = Table(*COLUMNS, title="Contacts received by the contact platform")
        for contact in result.contacts:
            table.add_row(*contact_row(contact))
        console.print(table)
        acknowledged = await _wait_acknowledged(eb, result.contacts)
        talk = await conversation_table(eb, result.contacts)
        if talk.row_count:
            console.print(talk)
        for note in phone.notes if phone is not None else []:
            console.print(f"[bold magenta]emergency contact notified[/bold magenta] {note['contact_name']}: "
                          f"{note['subject']}")
        conveyed = await _show_conveyance(console, stack.virtual)
        if result.failed_step:
            console.print(f"[red]step failed[/red] {result.failed_step}")
        for missing in result.missing:
            console.print(f"[red]missing contact[/red] {missing.describe()}")
        ok = result.ok and conveyed
        verdict = "[green]OK[/green]" if ok else "[red]FAILED[/red]"
        console.print(
            f"{verdict}: {len(result.matched)}/{len(scenario.expected)} expected contacts arrived "
            f"({len(result.contacts)} received, {acknowledged} alerts acknowledged) in {result.elapsed_s:.1f} s"
        )
        if stay:
            await _stay_open(console, rx)
        else:
            console.print(f"[dim]The operator console was at {rx.base_url}/ while the demo ran; "
                          "`sosbridge demo --stay` keeps it open.[/dim]")
    return ok


async def conversation_table(eb: EmbeddedBridge, contacts: list[dict[str, Any]]) -> Table:
    """The text conversations of the demo's alerts, from the bridge's own history: what the platform wrote,
    how each text reached the device (and whether it was discreet), and what the person answered."""
    table = Table("device", "from", "text", "how", title="Text conversations (the alerts' history in the bridge)")
    alert_ids = list(dict.fromkeys(c["alert_id"] for c in contacts))
    for alert_id in alert_ids:
        alert = await eb.runtime.store.get_alert(alert_id)
        if alert is None:
            continue
        history = await eb.runtime.store.history(alert_id)
        delivered = deliveries(history)
        for message in conversation(history):
            if message["from"] == "person":
                table.add_row(alert.device_id, "person", message["text"], "to the platform as a message contact")
                continue
            how = ", ".join(f"{d['channel']}: {d['status']}" for d in delivered.get(message["message_id"], []))
            quiet = "discreet: shown without sound, nothing spoken or texted" if message["discreet"] else ""
            table.add_row(alert.device_id, "platform", message["text"], "; ".join(x for x in (how, quiet) if x))
    return table


async def _show_conveyance(console: Console, virtual: dict[str, Any], timeout: float = 10.0) -> bool:
    """The fall also reached the platform's NG112 ends: a SIP MESSAGE at its PSAP, an EIDO event at its
    CAD (docs/platform/sip-message.md, docs/platform/eido-websocket.md). True when both arrived valid."""
    psap, cad = virtual.get("sip_psap"), virtual.get("eido_cad")
    if psap is None or cad is None:
        return True
    deadline = time.monotonic() + timeout
    while True:  # the PSAP and the CAD only keep lists: poll them, under a deadline
        if (psap.received and cad.eidos) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    for message in psap.received[:1]:
        state = "valid" if not message["errors"] else f"INVALID: {'; '.join(message['errors'])[:200]}"
        console.print(f"[bold cyan]SIP MESSAGE at the PSAP[/bold cyan] {message['request_line']}  ·  "
                      f"parts {', '.join(message['parts'])} ({state})  ·  Call-Info {message['call_info']}")
    for eido in cad.eidos[:1]:
        alarm = eido.get("alarmsSensorsComponent", [{}])[0].get("csaaAlarmInformation", "")
        console.print(f"[bold cyan]EIDO event at the CAD[/bold cyan] {eido.get('$id')}  ·  {alarm}")
    ok = bool(psap.received) and bool(cad.eidos) and not any(m["errors"] for m in psap.received)
    if not ok:
        console.print("[red]the fall did not reach the PSAP as a valid SIP MESSAGE and the CAD as EIDO[/red]")
    return ok


async def _stay_open(console: Console, rx: EmbeddedReceiver) -> None:
    console.print(
        f"Everything stays running: the operator console is at [bold]{rx.base_url}/[/bold] (acknowledge, "
        "resolve, text the callers). Press Ctrl-C to stop."
    )
    # Ctrl-C here ends the wait, not the command: the demo then shuts down as it would have, with its verdict.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (NotImplementedError, RuntimeError, ValueError):  # no signal handlers here: Ctrl-C interrupts
        pass
    await stop.wait()  # a forever-wait by design: `demo --stay` runs until the operator presses Ctrl-C


async def _print_contacts(console: Console, rx: EmbeddedReceiver) -> None:
    shown = 0
    while True:
        contacts = rx.contacts
        for contact in contacts[shown:]:
            row = contact_row(contact)
            console.print("[bold green]contact[/bold green] " + "  ".join(c for c in row[1:] if c))
        shown = len(contacts)
        await asyncio.sleep(0.05)


async def _wait_acknowledged(eb: EmbeddedBridge, contacts: list[dict[str, Any]], timeout: float = 5.0) -> int:
    """How many alerts reached "help is on the way"; waits briefly for the platform's callbacks."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for alert_id in {c["alert_id"] for c in contacts}:
            alert = await eb.runtime.store.get_alert(alert_id)
            if alert is not None:
                states.append(alert.state.value)
        acknowledged = sum(s in ("acknowledged", "resolved") for s in states)
        if acknowledged == sum(s != "cancelled" for s in states) or time.monotonic() > deadline:
            return acknowledged
        await asyncio.sleep(0.1)
