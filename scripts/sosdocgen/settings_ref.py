"""The configuration reference page and `sosbridge.example.toml`, both from the settings classes: the core's
`Settings` and every class registered under the `sosbridge.settings` entry point group (each transport's
section, with its TOML keys; other plug-ins' classes as environment variables only)."""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from bridge.app.config import ENV_PREFIX, Settings
from bridge.app.sections import GROUP, PluginSettings, key_prefix
from bridge.infra.plugins import load_group

# Sections of Settings, in order; a field missing here still appears, under "Other".
GROUPS: list[tuple[str, list[str]]] = [
    ("Storage", ["config", "data_dir", "db", "redis_url"]),
    ("HTTP API", ["http_host", "http_port", "public_url", "admin_token", "platform_token", "max_body_bytes"]),
    (
        "Contact platform and delivery",
        [
            "platform_url",
            "platform_secret",
            "platform_format",
            "platform_timeout_s",
            "fallback_url",
            "fallback_file",
            "fallback_after_attempts",
            "retry_base_s",
            "retry_max_s",
            "forwarder_workers",
            "lease_s",
        ],
    ),
    ("Device profiles", ["profile_dirs"]),
    (
        "Abuse resistance and retention",
        [
            "device_update_burst",
            "device_update_per_min",
            "auth_failures_burst",
            "auth_failures_per_min",
            "retention_days",
        ],
    ),
    (
        "Device supervision",
        ["supervision_enabled", "supervision_grace_s", "supervision_tick_s", "supervision_registry_refresh_s"],
    ),
    ("Behaviour", ["default_status", "last_known_max_age_s", "log_level"]),
]
# Defaults computed at run time, written as they are documented rather than as this machine's value.
COMPUTED_DEFAULTS = {"data_dir": "~/.local/share/sosbridge", "db": ""}


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(names)
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


def default_of(name: str, field: FieldInfo) -> Any:
    if name in COMPUTED_DEFAULTS:
        return COMPUTED_DEFAULTS[name]
    if field.default is PydanticUndefined:
        return None
    return field.default


def default_text(name: str, field: FieldInfo) -> str:
    value = default_of(name, field)
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def grouped(cls: type[BaseSettings] = Settings) -> list[tuple[str, list[tuple[str, FieldInfo]]]]:
    fields = dict(cls.model_fields)
    out = []
    for title, names in GROUPS:
        out.append((title, [(n, fields.pop(n)) for n in names if n in fields]))
    if fields:
        out.append(("Other", list(fields.items())))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(prefix: str, items: list[tuple[str, FieldInfo]], with_key: bool, key_prefix: str = "") -> list[str]:
    columns = ["variable", "TOML key", "type", "default", "meaning"]
    if not with_key:
        columns.remove("TOML key")
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for name, field in items:
        key = f" `{key_prefix}{name}` |" if name != "config" else " (not in the file) |"
        key = key if with_key else ""
        lines.append(
            f"| `{prefix}{name.upper()}` |{key} {_cell(type_name(field.annotation))} | "
            f"{default_text(name, field)} | {_cell(field.description or '')} |"
        )
    return lines


def registered_classes() -> list[tuple[str, type[BaseSettings]]]:
    """The installed plug-ins' settings classes (`sosbridge.settings`), by entry-point name."""
    return [(p.name, p.obj) for p in load_group(GROUP) if isinstance(p.obj, type) and issubclass(p.obj, BaseSettings)]


def title_of(name: str, cls: type[BaseSettings]) -> str:
    """A section's `title`; for another settings class, its module's first words before "settings"."""
    if issubclass(cls, PluginSettings) and cls.title:
        return cls.title
    doc = (sys.modules[cls.__module__].__doc__ or "").split(" settings", 1)[0].strip()
    return doc or name


def _prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config.get("env_prefix") or "")


def configuration_page() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Every setting, with its default. Set each as an environment variable, or as a key in the TOML file",
        "given with `--config FILE` or `SOSBRIDGE_CONFIG` (both read the same file the same way). Precedence,",
        "highest first: command-line options, environment variables, the file, command defaults. An unknown",
        "key in the file is an error naming it; a bad value is an error naming the variable, and `sosbridge`",
        "exits with code 2. [`sosbridge.example.toml`](#example-file) lists them all, commented.",
        "How to use them: [Configuration](../operations/configuration.md).",
        "",
    ]
    for title, items in grouped():
        lines += [f"## {title}", "", *_table(ENV_PREFIX, items, with_key=True), ""]
    lines += [
        "## Routes",
        "",
        "`[[routes]]` tables in the file, or `SOSBRIDGE_ROUTES` (a JSON array of the same tables), add platform",
        "endpoints chosen per contact; see [Routing](../platform/standards.md#routing).",
        "",
    ]
    classes = registered_classes()
    for name, cls in classes:
        if not issubclass(cls, PluginSettings):
            continue
        see = f" See [{cls.title or name}](../{cls.docs_page})." if cls.docs_page else ""
        lines += [
            f"## {title_of(name, cls)} (`{_prefix(cls)}*`)",
            "",
            f"The `{name}` plug-in's own settings (registered under `{GROUP}`).{see}",
            "",
            *_table(_prefix(cls), list(cls.model_fields.items()), with_key=True, key_prefix=key_prefix(cls)),
            "",
        ]
    for name, cls in classes:
        if issubclass(cls, PluginSettings):
            continue
        lines += [
            f"## {title_of(name, cls)} (`{_prefix(cls)}*`)",
            "",
            f"The `{name}` plug-in's settings: environment variables only (not read from the TOML file).",
            "",
            *_table(_prefix(cls), list(cls.model_fields.items()), with_key=False),
            "",
        ]
    lines += [
        "## Example file",
        "",
        "`sosbridge.example.toml` at the root of the repository (generated from this reference):",
        "",
        "```toml",
        example_toml().rstrip(),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def example_toml() -> str:
    lines = [
        "# SOS Bridge configuration. Generated by scripts/docgen from the settings classes: do not edit by hand.",
        "#",
        "# Copy it, uncomment what you change, and run `sosbridge serve --config sosbridge.toml` (or set",
        "# SOSBRIDGE_CONFIG=sosbridge.toml: the same). Environment variables SOSBRIDGE_<KEY> win over this file.",
        "# An unknown key is an error naming it. Keep the file readable only by the service: it may hold secrets.",
        "",
        "[sosbridge]",
    ]
    for title, items in grouped():
        lines += ["", f"# -- {title} " + "-" * max(0, 96 - len(title))]
        for name, field in items:
            if name == "config":
                continue
            lines.append(f"# {field.description or name} ({ENV_PREFIX}{name.upper()})")
            value = default_of(name, field)
            if value is None or value == "":
                lines.append(f'# {name} = ""   # unset')
            else:
                lines.append(f"# {name} = {_toml_value(value)}")
    for name, cls in registered_classes():
        if not issubclass(cls, PluginSettings):
            continue
        title = f"{title_of(name, cls)} (plug-in {name})"
        lines += ["", f"# -- {title} " + "-" * max(0, 96 - len(title))]
        for field_name, field in cls.model_fields.items():
            lines.append(f"# {field.description or field_name} ({cls.env_name(field_name)})")
            value = default_of(field_name, field)
            key = cls.key(field_name)
            unset = value is None or value == ""
            lines.append(f'# {key} = ""   # unset' if unset else f"# {key} = {_toml_value(value)}")
    lines += [
        "",
        "# -- Routes: further platform endpoints, chosen per contact (docs: platform/standards.md#routing) ----",
        "# Every condition is optional; all the ones set must hold. With no route matching, the default route",
        "# (platform_url above) gets the contact.",
        "# [[routes]]",
        '# name = "scotland"',
        '# url = "https://contact.example.police.uk/sos"',
        '# secret_env = "SCOTLAND_SECRET"         # or secret = "..."; each route signs with its own secret',
        '# format = "cap"                         # json | cap | eido | pidf',
        '# fallback_url = "https://standby.example.police.uk/sos"',
        '# tenants = ["care-north"]',
        '# kinds = ["panic", "duress", "sos", "fall"]',
        '# min_severity = "severe"',
        '# statuses = ["actual"]',
        '# grid_squares = ["NT", "NN", "NS", "NO"]  # British National Grid 100 km squares',
        "# bbox = [54.6, -8.7, 60.9, -0.7]          # south, west, north, east (WGS 84)",
    ]
    return "\n".join(lines) + "\n"
