"""Scenarios: YAML files of devices, steps, faults and expected contacts, run against a live bridge.

Each step names an action (`http.alert`, `mqtt.sample`, `serial.sample`, `fault.receiver_down`, ...);
virtual devices register their actions in `ACTIONS`. After the steps, the runner waits until every
expected contact has arrived at the receiver and reports what is missing, and each device step's
latencies (`StepLatency`): from the step's send to its expected contacts' receipt at the platform, and
to the device's answer (the step's action returned: the bridge's acknowledgement on the wire, or the
state or text the step waits for). docs/testing/simulator.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from bridge.core.model import Device
from simulator.records import percentile, receiver_records

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ExpectedContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str
    kind: str | None = None
    msg_type: str = "alert"
    silent: bool | None = None
    status: str | None = None
    language: str | None = None
    location_source: str | None = None
    has_location: bool | None = None
    verified: bool | None = None

    def matches(self, contact: dict[str, Any]) -> bool:
        if contact.get("device", {}).get("id") != self.device or contact.get("msg_type") != self.msg_type:
            return False
        loc = contact.get("location") or {}
        checks = {
            "kind": contact.get("kind"),
            "silent": contact.get("silent"),
            "status": contact.get("status"),
            "language": contact.get("language"),
            "location_source": loc.get("source"),
            "has_location": bool(loc.get("lat") is not None or loc.get("civic")),
            "verified": contact.get("verified"),
        }
        return all(getattr(self, k) is None or getattr(self, k) == v for k, v in checks.items())

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.model_dump(exclude_none=True).items() if k != "device")
        return f"{self.device}: {extra}"


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str
    device: str | None = None
    title: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    delay_s: float = 0.0
    expect: list[ExpectedContact] = Field(default_factory=list)
    await_expected: bool = Field(default=False, description="Wait for this step's contacts before going on")


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    needs: list[str] = Field(
        default_factory=list, description="Virtual hardware this scenario uses: mqtt, serial, alexa, carer"
    )
    serial_gps_device: str | None = Field(default=None, description="Device the virtual serial GPS belongs to")
    devices: list[dict[str, Any]] = Field(default_factory=list)
    steps: list[Step]
    timeout_s: float = 30.0
    exact: bool = Field(default=False, description="Any contact from a scenario device that was not expected fails")

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        path = Path(path)
        if not path.exists() and (SCENARIO_DIR / f"{path}.yaml").exists():
            path = SCENARIO_DIR / f"{path}.yaml"
        return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))

    @property
    def expected(self) -> list[ExpectedContact]:
        return [e for s in self.steps for e in s.expect]


@dataclass
class RunContext:
    """What step actions can use: the bridge, the receiver, device tokens, the last alert of each device."""

    bridge_url: str
    receiver: Any  # bridge.receiver.EmbeddedReceiver (in-process) or a client of a remote one
    settings: Any
    runtime: Any = None
    tokens: dict[str, str] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    last_alert: dict[str, str] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)


Action = Callable[[RunContext, Step], Awaitable[None]]
ACTIONS: dict[str, Action] = {}


def action(name: str) -> Callable[[Action], Action]:
    def register(fn: Action) -> Action:
        ACTIONS[name] = fn
        return fn

    return register


# Extra keys a virtual device module understands in a scenario's device entry (e.g. `carer:`): each
# extension reads its value and completes the device spec before it is registered.
DeviceSpecExtension = Callable[["RunContext", dict[str, Any], Any], None]
DEVICE_SPEC_KEYS: dict[str, DeviceSpecExtension] = {}


def device_spec_key(name: str) -> Callable[[DeviceSpecExtension], DeviceSpecExtension]:
    def register(fn: DeviceSpecExtension) -> DeviceSpecExtension:
        DEVICE_SPEC_KEYS[name] = fn
        return fn

    return register


def load_builtin_actions() -> None:
    """Import every virtual device module so its actions register; a missing optional one is skipped."""
    import importlib

    for module in (
        "simulator.devices.http",
        "simulator.devices.faults",
        "simulator.devices.mqtt",
        "simulator.devices.coap",
        "simulator.devices.serial",
        "simulator.devices.alexa",
        "simulator.devices.watch",
        "simulator.devices.dc09",
        "simulator.devices.owntracks_http",
        "simulator.devices.carer",
    ):
        try:
            importlib.import_module(module)
        except ImportError:
            continue


@dataclass
class StepLatency:
    """One device step: milliseconds from its send to the device's answer and to each expected contact."""

    index: int
    step: str
    device: str | None
    answer_ms: float
    contact_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "step": self.step, "device": self.device,
                "answer_ms": round(self.answer_ms, 2), "contact_ms": [round(v, 2) for v in self.contact_ms]}


def latency_summary(steps: list[StepLatency]) -> dict[str, dict[str, float | int | None]]:
    """p50 and p99 of both latencies over a run's device steps (None when there is nothing to measure)."""

    def stats(values: list[float]) -> dict[str, float | int | None]:
        if not values:
            return {"n": 0, "p50": None, "p99": None}
        return {"n": len(values), "p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2)}

    return {"contact_ms": stats([v for s in steps for v in s.contact_ms]),
            "answer_ms": stats([s.answer_ms for s in steps])}


@dataclass
class ScenarioResult:
    scenario: str
    matched: list[tuple[ExpectedContact, dict[str, Any]]]
    missing: list[ExpectedContact]
    contacts: list[dict[str, Any]]
    elapsed_s: float
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    # The step whose check failed (a virtual device refused, a carer told, a text not seen), and why; the
    # steps after it were not run.
    failed_step: str | None = None
    latencies: list[StepLatency] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected and self.failed_step is None

    def summary(self) -> dict[str, Any]:
        """The run as JSON: counts, latency p50/p99, and each device step's latencies."""
        return {
            "scenario": self.scenario,
            "ok": self.ok,
            "passed": len(self.matched),
            "missing": [m.describe() for m in self.missing],
            "unexpected": len(self.unexpected),
            "failed_step": self.failed_step,
            "elapsed_s": round(self.elapsed_s, 2),
            "latency": latency_summary(self.latencies),
            "steps": [s.as_dict() for s in self.latencies],
        }


def match_expected(
    expected: list[ExpectedContact], contacts: list[dict[str, Any]]
) -> tuple[list[tuple[ExpectedContact, dict[str, Any]]], list[ExpectedContact]]:
    """Greedy one-to-one matching of expected contacts to received ones."""
    used: set[int] = set()
    matched: list[tuple[ExpectedContact, dict[str, Any]]] = []
    missing: list[ExpectedContact] = []
    for exp in expected:
        for i, contact in enumerate(contacts):
            if i not in used and exp.matches(contact):
                used.add(i)
                matched.append((exp, contact))
                break
        else:
            missing.append(exp)
    return matched, missing


async def register_devices(scenario: Scenario, ctx: RunContext, store: Any) -> None:
    import secrets

    load_builtin_actions()  # the device modules' extra keys (`carer:`) register with their actions

    for spec in scenario.devices:
        spec = dict(spec)
        token = spec.pop("token", None) or secrets.token_urlsafe(24)
        spec.setdefault("status", "exercise")  # simulated devices never raise a real call unless told to
        secrets_by_scheme = spec.pop("credentials", {}) or {}
        for key, extend in DEVICE_SPEC_KEYS.items():
            if (value := spec.pop(key, None)) is not None:
                extend(ctx, spec, value)
        device = Device.model_validate(spec)
        await store.put_device(device)
        await store.set_credential(device.device_id, "token", token)
        for scheme, value in secrets_by_scheme.items():
            await store.set_credential(device.device_id, scheme, value, hashed=False)
            ctx.scratch[f"credential:{device.device_id}:{scheme}"] = value
        ctx.tokens[device.device_id] = token
        ctx.devices[device.device_id] = device


async def run_scenario(
    scenario: Scenario,
    ctx: RunContext,
    on_step: Callable[[Step], None] | None = None,
) -> ScenarioResult:
    load_builtin_actions()
    started = time.monotonic()
    failed_step: str | None = None
    timings: list[tuple[int, Step, float, float]] = []  # device steps: index, step, sent and answered (wall clock)
    for index, step in enumerate(scenario.steps):
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        handler = ACTIONS.get(step.action)
        if handler is None:
            raise KeyError(f"unknown scenario action {step.action!r}; known: {sorted(ACTIONS)}")
        if on_step:
            on_step(step)
        sent = time.time()
        try:
            await handler(ctx, step)
            if step.device:
                timings.append((index, step, sent, time.time()))
        except (RuntimeError, TimeoutError, KeyError) as exc:
            # A check of the step failed (KeyError: no alert of that device to act on): the run stops here
            # and says why; the contacts expected so far are still collected and reported.
            failed_step = f"{step.title or step.action}: {exc}"
            break
        if step.await_expected and step.expect:
            try:
                await ctx.receiver.wait_for(
                    lambda cs, exp=step.expect: not match_expected(exp, cs)[1], timeout=scenario.timeout_s
                )
            except TimeoutError:
                break
    expected = scenario.expected
    try:
        await ctx.receiver.wait_for(lambda cs: not match_expected(expected, cs)[1], timeout=scenario.timeout_s)
    except TimeoutError:
        pass
    if scenario.exact:
        await asyncio.sleep(0.5)  # let any contact that should not exist arrive, so it is seen
    contacts = list(ctx.receiver.contacts)
    matched, missing = match_expected(expected, contacts)
    unexpected: list[dict[str, Any]] = []
    if scenario.exact:
        matched_ids = {id(c) for _, c in matched}
        unexpected = [c for c in contacts if id(c) not in matched_ids and c.get("device", {}).get("id") in ctx.devices]
    return ScenarioResult(scenario.name, matched, missing, contacts, time.monotonic() - started, unexpected,
                          failed_step, step_latencies(timings, matched, ctx.receiver))


def step_latencies(timings: list[tuple[int, Step, float, float]], matched: list[tuple[ExpectedContact, dict[str, Any]]],
                   receiver: Any) -> list[StepLatency]:
    """Each device step's answer time, and its expected contacts' receipt times at the platform. A contact
    received before its step was sent (another step caused it) is not counted as this step's."""
    received_at = {id(r["contact"]): float(r["received_at"]) for r in receiver_records(receiver) if r.get("contact")}
    contact_of = {id(exp): contact for exp, contact in matched}
    out = []
    for index, step, sent, answered in timings:
        at = [received_at.get(id(contact_of[id(e)])) for e in step.expect if id(e) in contact_of]
        out.append(StepLatency(index, step.title or step.action, step.device, (answered - sent) * 1000,
                               [(t - sent) * 1000 for t in at if t is not None and t >= sent]))
    return out
