"""`sosbridge sim run` reports each device step's latency (docs/testing/simulator.md): from the send to its
contact at the platform, and to the device's answer, with p50/p99 in the summary and the JSON output.
Run as a subprocess; a platform made slow for one step must show in that step's contact latency and not
in its answer (intake never waits for the platform), so the figures are the platform's receipts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

SCENARIO = """\
name: latency
timeout_s: 20
devices:
  - {device_id: w1, profile_id: sosbridge-http-wearable}
  - {device_id: w2, profile_id: sosbridge-http-wearable}
steps:
  - {action: fault.receiver_slow, args: {seconds: 1.5}}
  - {action: http.alert, device: w1, args: {kind: sos}, expect: [{device: w1, kind: sos}], await_expected: true}
  - {action: fault.receiver_up}
  - {action: http.alert, device: w2, args: {kind: fall}, expect: [{device: w2, kind: fall}]}
  - {action: http.wait_state, device: w2, args: {states: [forwarded, acknowledged]}}
"""


@pytest.mark.timeout(120)
def test_sim_run_reports_step_latencies(tmp_path: Path) -> None:
    scenario, out = tmp_path / "latency.yaml", tmp_path / "result.json"
    scenario.write_text(SCENARIO)
    run = subprocess.run([sys.executable, "-m", "bridge.app.cli", "sim", "run", str(scenario), "--json-out", str(out)],
                         capture_output=True, text=True, timeout=100, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "latency send → contact at the platform: p50" in run.stdout
    assert "latency send → answer at the device: p50" in run.stdout
    result = json.loads(out.read_text())
    assert result["ok"] and result["passed"] == 2
    steps = {s["index"]: s for s in result["steps"]}
    assert sorted(steps) == [1, 3, 4]  # device steps only: faults are not timed
    slow, fast, waited = steps[1], steps[3], steps[4]
    assert slow["contact_ms"][0] >= 1500 > slow["answer_ms"], slow  # the platform was slow, intake was not
    assert 0 < fast["contact_ms"][0] < 1500 and fast["answer_ms"] > 0, fast
    assert waited["contact_ms"] == [] and waited["answer_ms"] > 0
    latency = result["latency"]
    assert latency["contact_ms"]["n"] == 2 and latency["answer_ms"]["n"] == 3
    assert 0 < latency["contact_ms"]["p50"] <= latency["contact_ms"]["p99"] == slow["contact_ms"][0]
