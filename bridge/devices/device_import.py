"""`sosbridge devices import`: validate a whole device file first, then write it in batches.

Idempotent: devices are upserted; a row's `token` replaces that device's token; a device without a
token in the file keeps the one it has, and only a new device without one is given a generated token
(written once to a tokens file, mode 0600).
"""

from __future__ import annotations

import csv
import os
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.core.model import Device
from bridge.devices.device_files import RUNTIME_FIELDS, DeviceFileError, DeviceRow, read_devices
from bridge.store.base import Store


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # already registered exactly so, and no new token: not written again
    generated_tokens: dict[str, str] = field(default_factory=dict)


def load_rows(path: Path, known_profiles: Collection[str]) -> list[DeviceRow]:
    """Every row, validated, before anything is written; DeviceFileError names the file and line."""
    if not path.is_file():
        raise DeviceFileError(f"{path}: no such file")
    rows = list(read_devices(path))
    seen: dict[str, int] = {}
    for row in rows:
        device = row.device
        if device.device_id in seen:
            first = seen[device.device_id]
            raise DeviceFileError(f"{path}:{row.line}: device {device.device_id!r} is already on line {first}")
        seen[device.device_id] = row.line
        if device.profile_id is not None and device.profile_id not in known_profiles:
            raise DeviceFileError(
                f"{path}:{row.line}: unknown profile {device.profile_id!r} (see `sosbridge profiles list`)"
            )
    return rows


async def import_rows(
    store: Store,
    rows: Sequence[DeviceRow],
    batch: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    existing = {d.device_id: d for d in await store.list_devices()}
    result = ImportResult()
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        tokens: dict[str, str] = {}
        changed = []
        for row in chunk:
            device_id = row.device.device_id
            known = existing.get(device_id)
            if row.token:
                tokens[device_id] = row.token
            elif known is None:
                tokens[device_id] = result.generated_tokens[device_id] = secrets.token_urlsafe(24)
            if known is None:
                result.created += 1
            elif not row.token and as_registered(known) == row.device:
                result.unchanged += 1
                continue
            else:
                result.updated += 1
            changed.append(row.device)
        if changed:
            await store.put_devices(changed, tokens)
        if progress is not None:
            progress(len(chunk))
    return result


def as_registered(device: Device) -> Device:
    """A stored device without what the bridge learns at run time (as a device file would carry it)."""
    return device.model_copy(update=dict.fromkeys(RUNTIME_FIELDS))


def write_tokens(path: Path, tokens: dict[str, str]) -> None:
    """device_id,token rows, readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["device_id", "token"])
        writer.writerows(sorted(tokens.items()))
