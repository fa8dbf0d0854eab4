"""docs/reference/cli-options.md: every command and option of `sosbridge`, from the Typer app itself.

Duck-typed over the command objects (Typer may ship its own copy of click's classes).
"""

from __future__ import annotations

from typing import Any

import typer


def _commands(group: Any, prefix: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):
            out += _commands(command, path)
        else:
            out.append((path, command))
    return out


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _param_row(param: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{str(param.name).upper()}`"
        kind = "argument"
    else:
        name = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        kind = "flag" if getattr(param, "is_flag", False) else "value"
        if getattr(param, "multiple", False):
            kind = "repeatable"
    default = param.default
    shown = "" if default is None or default == () or callable(default) else f"`{default}`"
    help_text = getattr(param, "help", None) or ""
    return f"| {name} | {kind} | {shown} | {_cell(help_text)} |"


def _render(path: str, command: Any) -> list[str]:
    lines = [f"## `{path}`", ""]
    if command.help:
        lines += [_cell(command.help.split("\n\n")[0]), ""]
    params = [p for p in command.params if p.name != "help"]
    if params:
        lines += ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
        lines += [_param_row(p) for p in params]
        lines.append("")
    return lines


def cli_page() -> str:
    from bridge.app.cli import add_plugin_commands, app

    add_plugin_commands()
    commands = _commands(typer.main.get_command(app), "sosbridge")
    lines = [
        "# Command-line options",
        "",
        "Every command and option, generated from the command line itself (`sosbridge COMMAND --help` says the",
        "same). What the commands are for, with examples: [Command line](cli.md).",
        "",
    ]
    for path, command in commands:
        lines += _render(path, command)
    return "\n".join(lines).rstrip() + "\n"
