"""Which `SOSBRIDGE_*` environment variables some component reads, so a misspelt one is said at start.

The core's names are its `Settings` fields (plus SOSBRIDGE_ROUTES and the test suite's own variables);
a plug-in registers its own under the `sosbridge.settings` entry point group. An entry point's object
may be a pydantic settings class (every field under its `env_prefix`), a name, or a sequence of names;
a name ending in `_` is a prefix (everything under it is the plug-in's). `unknown_variables(environ)`
lists the rest with the closest known name. See docs/operations/configuration.md.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.app.config import ENV_PREFIX, Settings, env_name
from bridge.infra.plugins import load_group

GROUP = "sosbridge.settings"
# Read by the core outside Settings, and by the test suite and its fault harness (docs/testing/).
CORE_NAMES = frozenset({"SOSBRIDGE_ROUTES", "SOSBRIDGE_DIFF_SEEDS", "SOSBRIDGE_KEEP_FAULT_DIRS", "SOSBRIDGE_HA_VENV"})
CORE_PREFIXES = ("SOSBRIDGE_TEST_",)


@dataclass(frozen=True)
class Known:
    names: frozenset[str]
    prefixes: tuple[str, ...]

    def reads(self, variable: str) -> bool:
        return variable in self.names or variable.startswith(self.prefixes)


def names_of(obj: Any) -> list[str]:
    """The names (and `_`-ended prefixes) one registration stands for."""
    if isinstance(obj, str):
        return [obj]
    fields = getattr(obj, "model_fields", None)
    config = getattr(obj, "model_config", None)
    if isinstance(fields, dict) and isinstance(config, dict):
        prefix = str(config.get("env_prefix") or "")
        return [(prefix + name).upper() for name in fields]
    if isinstance(obj, Iterable):
        return [str(x) for x in obj]
    raise TypeError(f"a {GROUP} entry point must be a settings class, a name or names, got {obj!r}")


def known_settings(registrations: Iterable[Any] | None = None) -> Known:
    """What the core and the installed plug-ins (or the given registrations) read."""
    if registrations is None:
        registrations = [plugin.obj for plugin in load_group(GROUP)]
    names = set(CORE_NAMES) | {env_name(field) for field in Settings.model_fields}
    prefixes = list(CORE_PREFIXES)
    for obj in registrations:
        for name in names_of(obj):
            (prefixes.append(name) if name.endswith("_") else names.add(name))
    return Known(frozenset(names), tuple(prefixes))


def unknown_variables(environ: Mapping[str, str], known: Known | None = None) -> list[tuple[str, str | None]]:
    """Each `SOSBRIDGE_*` variable nothing reads, with the closest known name (or None), sorted."""
    known = known or known_settings()
    out = []
    for variable in sorted(v for v in environ if v.startswith(ENV_PREFIX) and not known.reads(v)):
        close = difflib.get_close_matches(variable, known.names, n=1, cutoff=0.75)
        out.append((variable, close[0] if close else None))
    return out


def unknown_variable_warnings(environ: Mapping[str, str]) -> list[str]:
    return [
        f"{variable} is not a setting of this bridge or its plug-ins: ignored"
        + (f" (did you mean {close}?)" if close else "")
        for variable, close in unknown_variables(environ)
    ]
