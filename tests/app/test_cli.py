"""The command line a registry operator uses: devices add/list/remove and device keys, on a real store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from bridge.store.sqlite import SqliteStore
from tests.support.paths import ROOT


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOSBRIDGE_DB": str(tmp_path / "cli.db"), "SOSBRIDGE_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def credentials(tmp_path: Path, device_id: str, scheme: str) -> str | None:
    async def read() -> str | None:
        store = SqliteStore(tmp_path / "cli.db")
        await store.open()
        try:
            return await store.get_credential(device_id, scheme)
        finally:
            await store.close()

    return asyncio.run(read())


def test_devices_and_keys(tmp_path: Path) -> None:
    added = cli(
        tmp_path,
        "devices",
        "add",
        "watch-9",
        "--language",
        "gd",
        "--need",
        "deaf: text only",
        "--identifier",
        "msisdn=+447700900123",
        "--lat",
        "57.48",
        "--lon",
        "-4.22",
    )
    assert added.returncode == 0 and "token (shown once)" in added.stdout
    listed = cli(tmp_path, "devices", "list")
    assert "watch-9" in listed.stdout and "deaf: text only" in listed.stdout

    key = cli(tmp_path, "devices", "coap-key", "watch-9")
    assert key.returncode == 0
    shown = key.stdout.strip().split()[-1]
    assert credentials(tmp_path, "watch-9", "coap_hmac") == shown and len(shown) == 64

    oscore = cli(tmp_path, "devices", "oscore", "watch-9", "--recipient-id", "d9")
    assert oscore.returncode == 0, oscore.stderr
    device_side = json.loads(oscore.stdout.strip().splitlines()[-1])
    stored = json.loads(credentials(tmp_path, "watch-9", "oscore") or "{}")
    assert device_side["sender_id"] == stored["recipient_id"] == "d9"
    assert device_side["master_secret"] == stored["master_secret"]

    assert cli(tmp_path, "devices", "coap-key", "ghost").returncode != 0
    assert cli(tmp_path, "devices", "remove", "watch-9").returncode == 0
    assert "watch-9" not in cli(tmp_path, "devices", "list").stdout


def test_schema_command_prints_the_contact_schema(tmp_path: Path) -> None:
    out = cli(tmp_path, "schema")
    schema = json.loads(out.stdout)
    assert schema["properties"]["schema"]["const"] == "sosbridge.contact/1"
    assert {"alert_id", "kind", "location", "silent", "status", "msg_type"} <= set(schema["properties"])


def test_profiles_check_shows_what_one_frame_decodes_to(tmp_path: Path) -> None:
    """Issue 13 item 5: `profiles check` with a frame shows an unmatched frame as the bridge counts it."""
    profile = str(ROOT / "hardware" / "profiles" / "zigbee2mqtt-aqara-wxkg11lm.yaml")
    # An IAS ACE "panic" is not a WXKG11LM word: unmatched, exit 1.
    unmatched = cli(tmp_path, "profiles", "check", profile, "--frame", '{"action": "panic"}')
    assert unmatched.returncode == 1, unmatched.stdout + unmatched.stderr
    assert "unmatched" in unmatched.stdout and "sosbridge_frames_unmatched_total" in unmatched.stdout
    # A single click is the button's panic press.
    pressed = cli(tmp_path, "profiles", "check", profile, "--frame", '{"action": "single"}')
    assert pressed.returncode == 0, pressed.stdout + pressed.stderr
    assert '"kind": "panic"' in pressed.stdout
