"""The example plug-in package (examples/sosbridge-acme-pendant) installs, registers its decoder, adapter
and profile through entry points, and carries a binary pendant's SOS from TCP to the contact platform."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.paths import ROOT

EXAMPLE = ROOT / "examples" / "sosbridge-acme-pendant"

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, socket, sys, tempfile
    from pathlib import Path
    from bridge.core.model import Device
    from bridge.app.startup import summary_lines
    from tests.support.ports import free_port
    from simulator.harness import embedded_stack
    from sosbridge_acme.frame import ACK, NAK, build

    async def main():
        port = free_port()
        os.environ["SOSBRIDGE_ACME_PORT"] = str(port)
        async with embedded_stack(Path(tempfile.mkdtemp()), embedded_mqtt=False) as stack:
            rt = stack.bridge.runtime
            await rt.store.put_device(Device(device_id="pendant-7", profile_id="acme-pendant-p1",
                                             identifiers={"acme_serial": "0a1b2c3d4e5f"}))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            replies = []
            for frame in (build("0a1b2c3d4e5f", 1, 7, 57.4125, -6.1960, 15),
                          build("0a1b2c3d4e5f", 1, 8)[:-1] + b"\\x00",      # corrupted
                          build("ffffffffffff", 1, 9),                      # unknown pendant
                          build("0a1b2c3d4e5f", 1, 7, 57.4125, -6.1960, 15)):  # the pendant's retry
                writer.write(frame)
                await writer.drain()
                replies.append((await reader.readexactly(3)).hex())
            contacts = await stack.receiver.wait_for(lambda cs: len(cs) >= 1)
            await asyncio.sleep(0.5)  # room for a wrong second contact from the retry to arrive
            contacts = stack.receiver.contacts
            plugins = {g: [p.name for p in ps] for g, ps in rt.plugins.items()}
            summary = await asyncio.wait_for(summary_lines(rt), 30)
            refused = rt.metrics.render().decode()
            print(json.dumps({"replies": replies, "contact": contacts[0], "contacts": len(contacts),
                              "unknown_counted": 'reason="unknown_device",transport="acme-tcp"' in refused
                                                 or 'transport="acme-tcp",reason="unknown_device"' in refused,
                              "plugins": plugins, "summary": summary, "port": port,
                              "adapters": rt.started_adapters}))
            writer.close()

    asyncio.run(main())
    """
)


@pytest.mark.timeout(600)  # builds the plugin and installs it into a fresh venv (300 s + 120 s budgets below)
def test_plugin_installs_and_decodes(tmp_path: Path) -> None:
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}

    listed = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "profiles", "list"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert "acme-pendant-p1" in listed.stdout
    profile = target / "sosbridge_acme" / "profiles" / "acme-pendant-p1.yaml"
    checked = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "profiles", "check", str(profile)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0 and "3 passed, 0 failed" in checked.stdout, checked.stdout + checked.stderr

    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    out = json.loads(run.stdout.strip().splitlines()[-1])
    # ACK + seq after storage; NAK for a bad CRC (its seq cannot be trusted, so 0) and for an unknown pendant;
    # the retry of a stored frame is acknowledged again by the ingress without a second contact.
    assert out["replies"] == ["060007", "150000", "150009", "060007"]
    assert out["contacts"] == 1
    assert out["unknown_counted"], "the ingress counts the unknown pendant as refused on the acme-tcp transport"
    contact = out["contact"]
    assert contact["device"]["id"] == "pendant-7" and contact["kind"] == "sos"
    assert contact["device"]["transport"] == "acme-tcp" and contact["location"]["accuracy_m"] == 15
    assert "acme-binary" in out["plugins"]["sosbridge.decoders"]
    assert "acme-tcp" in out["plugins"]["sosbridge.adapters"] and "acme-tcp" in out["adapters"]
    # Its settings class (sosbridge.settings) gives the start-up summary its own line...
    assert f"ACME       127.0.0.1:{out['port']} TCP" in out["summary"], out["summary"]

    # ...and its section in the generated configuration reference, with its TOML key.
    page = subprocess.run(
        [sys.executable, "-c", "from sosdocgen.settings_ref import configuration_page; print(configuration_page())"],
        env={**env, "PYTHONPATH": env["PYTHONPATH"] + os.pathsep + str(ROOT / "scripts")},
        capture_output=True, text=True, timeout=120,
    )
    assert page.returncode == 0, page.stderr[-3000:]
    assert "## ACME P1 pendants (`SOSBRIDGE_ACME_*`)" in page.stdout
    assert "| `SOSBRIDGE_ACME_PORT` | `acme_port` | integer | unset |" in page.stdout

    # A bad value is one line naming the plug-in's variable, exit 2; its TOML key is a known key.
    bad = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "serve"],
        env={**env, "SOSBRIDGE_ACME_PORT": "eighty", "SOSBRIDGE_DATA_DIR": str(tmp_path / "data")},
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-3000:]
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sosbridge: error: SOSBRIDGE_ACME_PORT: Input should be"), lines
    config = tmp_path / "sosbridge.toml"
    config.write_text('[sosbridge]\nacme_port = "eighty"\n')
    from_file = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "serve", "--config", str(config)],
        env={**env, "SOSBRIDGE_DATA_DIR": str(tmp_path / "data")}, capture_output=True, text=True, timeout=120,
    )
    assert from_file.returncode == 2, from_file.stderr[-3000:]
    assert f"SOSBRIDGE_ACME_PORT (acme_port in {config})" in from_file.stderr, from_file.stderr


def test_plugin_is_not_installed_in_the_project_environment() -> None:
    """The test above proves installation; the product itself must not depend on the example."""
    import importlib.util

    assert importlib.util.find_spec("sosbridge_acme") is None
