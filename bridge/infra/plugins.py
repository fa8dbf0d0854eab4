"""Explicit plug-in loading from entry points; built-ins register the same way as third parties."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger("sosbridge.plugins")

GROUPS = ("sosbridge.adapters", "sosbridge.decoders", "sosbridge.sinks", "sosbridge.profiles",
          "sosbridge.profile_checks")


@dataclass(frozen=True)
class LoadedPlugin:
    group: str
    name: str
    value: str
    distribution: str | None
    obj: Any


def load_group(group: str) -> list[LoadedPlugin]:
    loaded: list[LoadedPlugin] = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party plug-in must not stop the bridge
            log.error("plugin failed to load", extra={"plugin": ep.name, "group": group, "error": str(exc)})
            continue
        dist = ep.dist.name if ep.dist is not None else None
        loaded.append(LoadedPlugin(group, ep.name, ep.value, dist, obj))
    return loaded


def load_all() -> dict[str, list[LoadedPlugin]]:
    return {group: load_group(group) for group in GROUPS}
