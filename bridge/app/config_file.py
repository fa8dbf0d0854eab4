"""Reading the TOML configuration file: settings at the top level or under `[sosbridge]`, plus `[[routes]]`.

Unknown keys are errors naming the key (with the closest known key), so a misspelt setting is never
silently ignored.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Collection
from typing import Any

ROUTES_KEY = "routes"


class ConfigError(ValueError):
    """A configuration or start-up problem, reported as one line: `SETTING: what is wrong`."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


def read_config_file(path: str, known: Collection[str]) -> dict[str, Any]:
    """The settings in the file (routes excluded: `bridge.delivery.routing` reads those). Raises ConfigError."""
    setting = f"SOSBRIDGE_CONFIG ({path})"
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(setting, "no such file") from None
    except OSError as exc:
        raise ConfigError(setting, f"cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(setting, f"not valid TOML: {exc}") from None
    table = raw
    if isinstance(raw.get("sosbridge"), dict):
        outside = sorted(set(raw) - {"sosbridge", ROUTES_KEY})
        if outside:
            raise ConfigError(setting, f"unknown table or key {outside[0]!r} (settings go under [sosbridge])")
        table = raw["sosbridge"]
    values = {k: v for k, v in table.items() if k != ROUTES_KEY}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(setting, f"unknown key {key!r}{hint}")
    return values
