"""`sosbridge devices checkin-reminder-url DEVICE URL`: where a device's check-in reminders are pushed
(device_adapters/checkin/webhook.py; docs/operations/checkin.md). Registered under `sosbridge.commands`."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from bridge.app.cli_support import CliError, CommandGroups, ConfigOpt, console, settings_from, with_store
from device_adapters.checkin.webhook import SCHEME


def register(groups: CommandGroups) -> None:
    groups.devices.command("checkin-reminder-url")(devices_checkin_reminder_url)


def devices_checkin_reminder_url(
    device_id: str,
    url: Annotated[str, typer.Argument(help="http(s) URL, e.g. Home Assistant's /api/webhook/<id>; '' removes it")],
    config: ConfigOpt = None,
) -> None:
    """Push this device's check-in reminders to a webhook (Home Assistant, an app's backend)."""
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.hostname):
        raise CliError("URL: must be an http:// or https:// URL with a host")
    settings = settings_from(config)

    async def store_url(store: Any) -> None:
        if await store.get_device(device_id) is None:
            raise CliError(f"device {device_id!r} is not registered")
        await store.set_credential(device_id, SCHEME, url, hashed=False)

    with_store(settings, store_url)
    console.print(f"{device_id}: check-in reminders go to the webhook" if url else
                  f"{device_id}: check-in reminders are not pushed")
