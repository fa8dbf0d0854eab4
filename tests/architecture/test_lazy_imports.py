"""A bridge that loads every plug-in and wires its runtime imports no library that only an optional
transport, format check or skill needs: those are imported when that part is enabled or first used
(issue 27's memory target). A fresh interpreter, so nothing another test imported counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

# Imported only by: the validators (xmlschema, elementpath, jsonschema), the EIDO notifier (websockets),
# the first grid reference (pyproj), the Alexa skill (ask_sdk_*, httpx), a serial GPS (pynmea2), the first
# webhook POST (aiohttp: in a delivery process, or the main process's first notification or webhook send),
# the first OSCORE-protected CoAP request (aiocoap's OSCORE with cryptography and lakers, the EDHOC library).
LAZY = ("xmlschema", "elementpath", "jsonschema", "websockets", "pyproj", "ask_sdk_model", "ask_sdk_core",
        "httpx", "pynmea2", "aiohttp", "cryptography", "lakers")

PROBE = f"""
import json, sys
from bridge.infra.plugins import load_all
load_all()
import bridge.app.cli, bridge.app.runtime
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {LAZY!r})))
"""


def test_starting_a_bridge_imports_no_optional_library() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


STARTED = """
import asyncio, json, sys
from bridge.app.config import Settings
from bridge.app.runtime import BridgeRuntime

async def main(work, processes):
    settings = Settings(db=work + "/bridge.db", data_dir=work, platform_url="http://127.0.0.1:9/contacts",
                        platform_secret="probe-secret-0123456789abcdef0123", admin_token="probe-admin-0123456789abcdef")
    runtime = BridgeRuntime(settings, processes=processes)
    runtime.adapters = []
    await asyncio.wait_for(runtime.start(), 60)
    try:
        print(json.dumps("aiohttp" in sys.modules))
    finally:
        await asyncio.wait_for(runtime.stop(), 60)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_aiohttp_is_loaded_at_start_only_where_webhooks_are_sent(tmp_path: Path) -> None:
    """With a delivery process, the main process never loads aiohttp (that process sends the webhooks); a
    single process loads it when it starts, so its first contact does not wait for the import."""
    for processes, loaded in ((2, False), (1, True)):
        work = tmp_path / str(processes)
        work.mkdir()
        out = subprocess.run([sys.executable, "-c", STARTED, str(work), str(processes)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120, check=True)
        assert json.loads(out.stdout.strip().splitlines()[-1]) is loaded, (processes, out.stderr[-2000:])
