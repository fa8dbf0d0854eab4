"""What every `sosbridge` sub-command shares, the core's and the plug-ins' alike: the consoles, the
`--config` option, settings from file + environment + flags, a run on the configured store, and the one
usage error (`CliError`: one line on stderr, exit 2). Plug-ins add their commands through the
`sosbridge.commands` entry point group (a callable given the `CommandGroups`). See docs/reference/cli.md.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console

from bridge.app.config import ConfigError, Settings, load_settings
from bridge.infra.interrupt import run_interruptible

console = Console(width=None if Console().is_terminal else 160)
err_console = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 160)
ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="TOML configuration file (the same as SOSBRIDGE_CONFIG)")
]


@dataclass(frozen=True)
class CommandGroups:
    """Where a plug-in adds its commands: `root` (`sosbridge X`), `devices` (`sosbridge devices X`),
    `profiles` (`sosbridge profiles X`)."""

    root: typer.Typer
    devices: typer.Typer
    profiles: typer.Typer


class CliError(Exception):
    """A usage problem reported as one line on stderr with exit code 2 (no traceback)."""


def settings_from(config: str | None, defaults: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    return load_settings(config, defaults=defaults, **{k: v for k, v in overrides.items() if v is not None})


def with_store(settings: Settings, fn: Any) -> Any:
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
