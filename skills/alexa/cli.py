"""`sosbridge alexa ...`: operator commands for the Alexa skill."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge.app.cli_support import CommandGroups

alexa_app = typer.Typer(help="Alexa skill: certificate cache.", no_args_is_help=True)


def register(groups: CommandGroups) -> None:
    """`sosbridge alexa …` (the `sosbridge.commands` entry point group)."""
    groups.root.add_typer(alexa_app, name="alexa")


@alexa_app.command("cache-cert")
def cache_cert(
    url: Annotated[str, typer.Argument(help="SignatureCertChainUrl, e.g. https://s3.amazonaws.com/echo.api/…pem")],
    file: Annotated[Path, typer.Argument(help="The PEM chain downloaded from that URL")],
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache directory (default SOSBRIDGE_ALEXA_CERT_CACHE_DIR)")
    ] = None,
) -> None:
    """Put a certificate chain into the offline cache under the name verification looks for."""
    from skills.alexa.certs import MAX_CHAIN_BYTES, CachedChainSource
    from skills.alexa.config import AlexaSettings
    from skills.alexa.verify import VerificationFailed, load_chain, normalise_cert_url

    directory = cache_dir or (Path(d) if (d := AlexaSettings().cert_cache_dir) else None)
    if directory is None:
        raise typer.BadParameter("give --cache-dir or set SOSBRIDGE_ALEXA_CERT_CACHE_DIR")
    try:
        canonical = normalise_cert_url(url)
        pem = file.read_bytes()
        if len(pem) > MAX_CHAIN_BYTES:
            raise VerificationFailed("cert_chain", "certificate chain is too large")
        load_chain(pem)
    except VerificationFailed as exc:
        raise typer.BadParameter(exc.detail) from None
    source = CachedChainSource(directory, None)
    source.store(canonical, pem)
    typer.echo(f"cached {canonical} as {source.path_for(canonical)}")
