"""Edge, not level (pure): a `state` mapping raises one alert on its rising edge and one restore on its
falling edge, however often the device repeats its state."""

from __future__ import annotations

from collections.abc import Iterable

from cachetools import LRUCache

from bridge.devices.decoding import Decoded


class EdgeMemory:
    """The last level seen per (device, state); bounded (LRU). After a restart every level starts low, so
    a state still high then raises once more: at most one repeat, never a lost alert."""

    def __init__(self, max_keys: int = 200_000) -> None:
        self.max_keys = max_keys
        self._levels: LRUCache[tuple[str, str], bool] = LRUCache(max_keys)

    def get(self, device_id: str, key: str) -> bool:
        return self._levels.get((device_id, key), False)

    def set(self, device_id: str, key: str, level: bool) -> None:
        self._levels[(device_id, key)] = level


def edges(
    events: Iterable[Decoded], device_id: str, memory: EdgeMemory
) -> tuple[list[Decoded], int, list[tuple[str, bool]]]:
    """The events to act on, how many level repeats were held back, and the new levels to remember (the
    caller records them, and gives them back if the events are not stored). Pure."""
    passed: list[Decoded] = []
    held = 0
    levels: list[tuple[str, bool]] = []
    for event in events:
        if event.state_key is None or event.state_on is None:
            passed.append(event)
            continue
        if event.state_on != memory.get(device_id, event.state_key):
            passed.append(event)
            levels.append((event.state_key, event.state_on))
        else:
            held += 1
    return passed, held, levels
