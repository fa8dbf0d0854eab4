"""The systemd units in deploy/systemd/ (docs/operations/deployment.md) pass `systemd-analyze verify`
with no warning, and keep the settings the deployment guide promises (sandboxing, the stop bound)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT, need_binary

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
INSTALLED = "/opt/sosbridge/venv/bin/sosbridge"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies_without_warnings(unit: Path, tmp_path: Path) -> None:
    analyze = need_binary("systemd-analyze")
    # verify checks that ExecStart exists: point it at this checkout's command instead of the install path.
    local = Path(sys.executable).parent / "sosbridge"
    text = unit.read_text()
    assert INSTALLED in text
    copy = tmp_path / unit.name
    copy.write_text(text.replace(INSTALLED, str(local)))
    run = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr.strip() == "", run.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_sandboxed_and_stops_within_its_bound(unit: Path) -> None:
    settings = [line.strip() for line in unit.read_text().splitlines() if "=" in line and not line.startswith("#")]
    for expected in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                     "PrivateTmp=yes", "CapabilityBoundingSet=", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                     "SystemCallFilter=@system-service", "RestartPreventExitStatus=2", "TimeoutStopSec=20"):
        assert expected in settings, f"{unit.name}: {expected}"


def test_both_units_are_there() -> None:
    assert [u.name for u in UNITS] == ["sosbridge-receiver.service", "sosbridge.service"]
