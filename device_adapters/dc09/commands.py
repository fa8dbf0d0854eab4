"""The SIA DC-09 transport's key command, added to `sosbridge devices` through the `sosbridge.commands`
entry point group: `devices dc09-key` gives an account its AES key. See docs/transports/dc09.md.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bridge.app.cli_support import CommandGroups, ConfigOpt, console, settings_from, with_store


def register(groups: CommandGroups) -> None:
    groups.devices.command("dc09-key")(devices_dc09_key)


def devices_dc09_key(
    device_id: str,
    key: Annotated[str, typer.Argument(help="The panel's AES key: 16/24/32 characters, or hex:<32/48/64 digits>")],
    config: ConfigOpt = None,
) -> None:
    """Give a SIA DC-09 account its AES key (docs/transports/dc09.md); plain messages are then refused."""
    from bridge.devices.decoding import DecodeError
    from device_adapters.decoders.dc09 import parse_key

    settings = settings_from(config)
    try:
        parse_key(key)  # a typo must fail here, not at the panel's first alarm
    except DecodeError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def store_key(store: Any) -> None:
        if await store.get_device(device_id) is None:
            raise typer.BadParameter(f"device {device_id!r} is not registered")
        await store.set_credential(device_id, "dc09_key", key, hashed=False)

    with_store(settings, store_key)
    console.print(f"{device_id}: DC-09 AES key stored")
