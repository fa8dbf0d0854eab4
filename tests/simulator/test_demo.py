"""`sosbridge demo`, the product's face, runs as a user would run it and exits 0 only when every expected
contact arrived."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT, need_binary


@pytest.mark.timeout(300)  # the whole demo, as `sosbridge demo` runs it (its own 300 s below)
def test_demo_command() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "demo"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = re.search(r"OK: (\d+)/(\d+) expected contacts arrived", run.stdout)
    assert summary and summary.group(1) == summary.group(2) and int(summary.group(2)) >= 19
    # The fall also reaches the platform's NG112 ends: a valid RFC 8876 MESSAGE and an EIDO event.
    flat = " ".join(run.stdout.split())  # rich wraps long lines at the console's width
    assert "SIP MESSAGE at the PSAP MESSAGE sip:sos@127.0.0.1:" in flat
    assert "application/emergencycalldata.cap+xml, application/pidf+xml (valid)" in flat
    assert "EIDO event at the CAD urn:emergency:uid:incidentid:" in flat
    # Every transport shows up in the table.
    for transport in ("http", "mqtt", "coap", "serial", "alexa", "watch", "dc09"):
        assert f"│ {transport}" in run.stdout
    # An emergency contact (a carer's webhook) is told about the fall and then that help is on the way.
    told = "emergency contact notified Catriona MacLeod: [EXERCISE] "
    assert told + "Alert: Morag MacLeod - fall" in run.stdout
    assert told + "Help is on the way: Morag MacLeod" in run.stdout
    # The duress caller's registered contact is told nothing (the scenario step fails if they are).
    assert "Jo's registered emergency contact is told nothing" in run.stdout
    assert "notified Alex Smith" not in run.stdout
    # A two-way text conversation, from the bridge's own history: the deaf fall victim reads the platform's
    # text on her watch and answers; the silent duress caller's text is discreet although the platform asked
    # for sound, and her answer reaches the platform.
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in run.stdout.splitlines()
            if line.count("│") == 5]
    assert ["watch-morag", "platform", "Help is on the way. Can you tell us where you are hurt?",
            "http: sent, app: read"] in rows
    assert ["watch-morag", "person", "My hip. I can't get up. The back door is open.",
            "to the platform as a message contact"] in rows
    jo = [r for r in rows if r[:2] == ["app-jo", "platform"]]
    assert jo and jo[0][3].startswith("http: sent, app: read; discreet")
    assert ["app-jo", "person", "He is in the kitchen", "to the platform as a message contact"] in rows
    assert re.search(r"│ app-jo +│ http +│ message +│ duress \(silent\)", run.stdout)


@pytest.mark.timeout(300)  # the whole demo, as `sosbridge demo --intake-workers 2` runs it
def test_demo_through_intake_processes_on_redis() -> None:
    """`sosbridge demo --intake-workers 2`: the whole showcase with every frame stored by one of two intake
    processes, on a redis-server the demo starts and stops itself; the processes are gone afterwards."""
    need_binary("redis-server")
    run = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "demo", "--intake-workers", "2"], capture_output=True, text=True,
        timeout=300, cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = re.search(r"OK: (\d+)/(\d+) expected contacts arrived \((\d+) received", run.stdout)
    assert summary and summary.group(1) == summary.group(2) and int(summary.group(2)) >= 19
    # None twice: an intake process picks a contact's routes from the main process's table (it had read
    # its own environment, without the demo's routes, and a text went to two routes, both the platform).
    assert summary.group(3) == summary.group(2)
    flat = " ".join(run.stdout.split())
    intake = re.search(r"intake processes: 2 \(pids (\d+), (\d+)\), every frame stored by one of them in "
                       r"redis redis://127\.0\.0\.1:\d+/0", flat)
    assert intake, flat[:2000]
    for pid in map(int, intake.groups()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # ended with the demo


@pytest.mark.timeout(60)
def test_demo_with_intake_processes_says_why_without_redis(tmp_path: Path) -> None:
    """No redis-server on PATH: the reason and what to do, exit 1, nothing left behind."""
    run = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "demo", "--intake-workers", "1"], capture_output=True, text=True,
        timeout=60, cwd=ROOT, env={**os.environ, "PATH": str(tmp_path), "TMPDIR": str(tmp_path)},
    )
    assert run.returncode == 1
    assert "intake processes need Redis, and redis-server is not installed" in " ".join(run.stdout.split())
    assert list(tmp_path.iterdir()) == []  # the demo's temporary directory is removed


@pytest.mark.timeout(300)  # the demo first, then its --stay phase
def test_demo_stays_open_for_the_console_until_ctrl_c() -> None:
    """`sosbridge demo --stay`: after the summary the reference platform keeps serving (its console and its
    JSON), with every contact the demo produced; Ctrl-C ends it quietly with the demo's verdict."""
    import json
    import signal
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.app.cli", "demo", "--stay"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT, env={**__import__("os").environ, "COLUMNS": "200"},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        text = "".join(lines)
        url = re.search(r"operator console is at (http://127\.0\.0\.1:\d+)/", text)
        summary = re.search(r"OK: (\d+)/\d+ expected contacts arrived \((\d+) received", text)
        assert url and summary, text[-3000:]
        with urllib.request.urlopen(url.group(1) + "/", timeout=10) as page:
            assert "<html" in page.read().decode().lower()
        with urllib.request.urlopen(url.group(1) + "/contacts", timeout=10) as listing:
            contacts = json.loads(listing.read())
        received = contacts["contacts"] if isinstance(contacts, dict) else contacts
        assert len(received) == int(summary.group(2))
        assert proc.poll() is None  # still serving
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
