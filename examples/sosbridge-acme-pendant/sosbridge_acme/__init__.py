"""Example plug-in: the ACME P1 pendant's binary protocol over TCP."""

from pathlib import Path


def profile_dir() -> Path:
    """Device profiles shipped with this plug-in (the `sosbridge.profiles` entry point)."""
    return Path(__file__).parent / "profiles"
