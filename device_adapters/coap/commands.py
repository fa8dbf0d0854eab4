"""The CoAP transport's key commands, added to `sosbridge devices` through the `sosbridge.commands` entry
point group: `devices coap-key` (an HMAC key) and `devices oscore` (an OSCORE context, RFC 8613).
See docs/transports/coap.md.
"""

from __future__ import annotations

import secrets
import sys
from typing import Annotated, Any

import typer

from bridge.app.cli_support import CliError, CommandGroups, ConfigOpt, console, settings_from, with_store


def register(groups: CommandGroups) -> None:
    groups.devices.command("coap-key")(devices_coap_key)
    groups.devices.command("oscore")(devices_oscore)


def devices_coap_key(
    device_id: str,
    config: ConfigOpt = None,
    key: Annotated[str | None, typer.Option(help="Hex key (generated when omitted)")] = None,
) -> None:
    """Give a device its CoAP HMAC key (for devices without OSCORE); prints it once."""
    settings = settings_from(config)
    secret = key or secrets.token_hex(32)
    try:
        bytes.fromhex(secret)  # a typo must fail here, not at the device's first alert
    except ValueError:
        raise CliError("--key: not a hex string") from None

    async def store_key(store: Any) -> None:
        if await store.get_device(device_id) is None:
            raise CliError(f"device {device_id!r} is not registered")
        await store.set_credential(device_id, "coap_hmac", secret, hashed=False)

    with_store(settings, store_key)
    console.print(f"{device_id}: CoAP HMAC key (shown once): {secret}")


def devices_oscore(
    device_id: str,
    config: ConfigOpt = None,
    sender_id: Annotated[str, typer.Option(help="The bridge's OSCORE Sender ID (hex)")] = "b1",
    recipient_id: Annotated[str, typer.Option(help="The device's Sender ID, the kid it sends (hex)")] = "",
    master_secret: Annotated[str | None, typer.Option(help="Hex master secret (generated when omitted)")] = None,
    master_salt: Annotated[str | None, typer.Option(help="Hex master salt (generated when omitted)")] = None,
) -> None:
    """Give a device an OSCORE security context (RFC 8613); prints the device's side once."""
    from device_adapters.coap.oscore import OscoreMaterial, register_oscore_device

    settings = settings_from(config)
    material = OscoreMaterial(
        sender_id=sender_id,
        recipient_id=recipient_id or secrets.token_hex(2),
        master_secret=master_secret or secrets.token_hex(16),
        master_salt=master_salt or secrets.token_hex(8),
    )
    try:
        with_store(settings, lambda store: register_oscore_device(store, device_id, material))
    except KeyError:
        raise CliError(f"device {device_id!r} is not registered") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    console.print(f"{device_id}: OSCORE context registered; the device's side (shown once):")
    sys.stdout.write(material.reversed().model_dump_json() + "\n")
