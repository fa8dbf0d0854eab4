"""Every scenario in simulator/scenarios passes against a live (embedded) bridge and receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.harness import embedded_stack, stack_for
from simulator.scenario import SCENARIO_DIR, RunContext, Scenario, register_devices, run_scenario

SCENARIOS = sorted(SCENARIO_DIR.glob("*.yaml"))


def test_there_are_scenarios() -> None:
    assert {p.stem for p in SCENARIOS} >= {"showcase", "receiver-outage", "hostile-input"}


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario(path: Path, tmp_path: Path) -> None:
    scenario = Scenario.load(path)
    async with stack_for(scenario, tmp_path) as stack:
        ctx = stack.run_context()
        await register_devices(scenario, ctx, stack.bridge.runtime.store)
        result = await run_scenario(scenario, ctx)
    assert result.ok, f"missing {[m.describe() for m in result.missing]}, unexpected {result.unexpected}"
    # Simulated devices are exercises end to end: no contact may look like a real call.
    assert result.contacts and all(c["status"] == "exercise" for c in result.contacts)


async def test_a_missing_contact_fails_the_run(tmp_path: Path) -> None:
    scenario = Scenario.model_validate(
        {
            "name": "impossible",
            "timeout_s": 2,
            "devices": [{"device_id": "w", "profile_id": "sosbridge-http-wearable"}],
            "steps": [
                {
                    "action": "http.alert",
                    "device": "w",
                    "args": {"kind": "sos"},
                    "expect": [{"device": "w", "kind": "fall"}],
                },
            ],
        }
    )
    async with embedded_stack(tmp_path, embedded_mqtt=False) as stack:
        ctx = RunContext(stack.bridge.url, stack.receiver, stack.settings, stack.bridge.runtime)
        await register_devices(scenario, ctx, stack.bridge.runtime.store)
        result = await run_scenario(scenario, ctx)
    assert not result.ok and [m.kind for m in result.missing] == ["fall"]


def test_sim_run_cli_exit_codes(tmp_path: Path) -> None:
    import subprocess
    import sys

    ok = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "sim", "run", "hostile-input"],
        capture_output=True, text=True, timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "hostile-input: 2 passed, 0 failed" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ntimeout_s: 2\ndevices: [{device_id: w, profile_id: sosbridge-http-wearable}]\n"
        "steps: [{action: http.alert, device: w, args: {kind: sos}, expect: [{device: w, kind: medical}]}]\n"
    )
    failed = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "sim", "run", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1 and "missing" in failed.stdout


async def test_carer_expect_fails_when_a_carer_is_told_about_an_alert_said_to_tell_nobody(tmp_path: Path) -> None:
    """`carer.expect none: true` is a real check: an audible fall does notify the carer, so the step fails."""
    from simulator.scenario import Step

    scenario = Scenario.model_validate({
        "name": "carer-check", "needs": ["carer"], "timeout_s": 10,
        "devices": [{"device_id": "carer-w1", "profile_id": "sosbridge-http-wearable",
                     "person": {"name": "Ann"}, "carer": {"name": "Bea", "relation": "daughter"}}],
        "steps": [
            {"action": "http.alert", "device": "carer-w1", "args": {"kind": "fall"},
             "expect": [{"device": "carer-w1", "kind": "fall"}], "await_expected": True},
            {"action": "carer.expect", "device": "carer-w1", "args": {"events": ["alert"]}},
        ],
    })
    async with stack_for(scenario, tmp_path) as stack:
        ctx = stack.run_context()
        await register_devices(scenario, ctx, stack.bridge.runtime.store)
        result = await run_scenario(scenario, ctx)
        assert result.ok
        checked = await run_scenario(scenario.model_copy(update={"steps": [
            Step(action="carer.expect", device="carer-w1", args={"none": True, "timeout_s": 0.5}),
            Step(action="http.alert", device="carer-w1", args={"kind": "fall"}),  # not run after a failure
        ]}), ctx)
        assert not checked.ok
        assert checked.failed_step is not None and "its carer was told about a silent alert" in checked.failed_step
        alert = await stack.bridge.runtime.store.get_alert(ctx.last_alert["carer-w1"])
        assert alert is not None and alert.escalation_count == 0  # the press after the failed step never ran


async def test_a_carer_needs_the_virtual_phone(tmp_path: Path) -> None:
    scenario = Scenario.model_validate({
        "name": "no-phone", "steps": [],
        "devices": [{"device_id": "carer-w2", "person": {"name": "Ann"}, "carer": {"name": "Bea"}}],
    })
    async with stack_for(scenario, tmp_path) as stack:
        with pytest.raises(RuntimeError, match="no virtual carer phone"):
            await register_devices(scenario, stack.run_context(), stack.bridge.runtime.store)
