"""The simulator's commands, added to `sosbridge` through the `sosbridge.commands` entry point group:
`sosbridge sim …` (scenarios, load, faults), `sosbridge demo` and `sosbridge receiver` (the reference
contact platform). See docs/testing/simulator.md and docs/platform/webhook.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bridge.app.cli_support import CliError, CommandGroups, console
from bridge.app.config import default_data_dir
from bridge.app.security import check_receiver
from bridge.infra.interrupt import run_interruptible


def register(groups: CommandGroups) -> None:
    from simulator.cli import sim_app

    groups.root.command()(receiver)
    groups.root.command()(demo)
    groups.root.add_typer(sim_app, name="sim")


# -- receiver -------------------------------------------------------------------------------------------
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
    from bridge.app.listeners import check_port_free
    from simulator.platform.report import WebhookReport, banner

    check_port_free("--port", host, port)
    sys.stdout.write("\n".join(banner(host, port, jsonl)) + "\n")
    sys.stdout.flush()
    uvicorn.run(WebhookReport(rx.create_app()), host=host, port=port, log_level="warning", access_log=False)


def demo(
    keep: Annotated[bool, typer.Option(help="Keep the temporary data directory")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every expected contact")] = 60.0,
    stay: Annotated[bool, typer.Option(help="Keep everything running afterwards, with the operator console "
                                             "open, until Ctrl-C")] = False,
    intake_workers: Annotated[int, typer.Option(
        min=0, max=16, help="Store every frame through this many intake processes, on Redis (a redis-server "
                            "of the demo's own unless --redis-url), as SOSBRIDGE_INTAKE_WORKERS does")] = 0,
    redis_url: Annotated[str | None, typer.Option(help="The Redis for --intake-workers (default: the demo "
                                                        "starts one from PATH)")] = None,
) -> None:
    """Start everything embedded, send alerts from simulated devices, show the contacts that arrive."""
    from simulator.demo import run_demo

    ok = run_interruptible(run_demo(console, keep=keep, timeout=timeout, stay=stay, intake_workers=intake_workers,
                                    redis_url=redis_url))
    raise typer.Exit(0 if ok else 1)
