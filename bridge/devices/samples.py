"""A profile's samples run as tests: each cited raw frame is decoded with the profile and compared with
what the profile says it must give (`sosbridge profiles check FILE`, the test suite, the device pages).
See docs/devices/index.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bridge.devices.decoding import Decoded, DecodeError, get_decoder
from bridge.devices.profiles import DeviceProfile, Sample, SampleExpectation


class SampleResult(BaseModel):
    profile_id: str
    sample: str
    expected: list[dict[str, Any]]
    actual: list[dict[str, Any]]
    error: str | None = None
    ok: bool


def summarise_event(d: Decoded) -> dict[str, Any]:
    loc = d.location
    return {
        "action": d.action,
        "kind": d.kind.value if d.kind else None,
        "silent": d.silent,
        "lat": loc.lat if loc else None,
        "lon": loc.lon if loc else None,
        "accuracy_m": loc.accuracy_m if loc else None,
        "device_ref": d.device_ref,
        "message_id": d.message_id,
        "state_on": d.state_on,
    }


def _matches(expected: SampleExpectation, actual: dict[str, Any]) -> bool:
    for key, want in expected.model_dump(exclude_none=True).items():
        got = actual.get(key)
        if key in ("lat", "lon", "accuracy_m"):
            if got is None or abs(float(got) - float(want)) > 1e-4:
                return False
        elif got != want:
            return False
    return True


def run_sample(profile: DeviceProfile, sample: Sample) -> SampleResult:
    expected = [e.model_dump(exclude_none=True) for e in sample.expect]
    try:
        decoded = get_decoder(profile.decoder)(sample.frame(), profile)
    except DecodeError as exc:
        return SampleResult(
            profile_id=profile.id,
            sample=sample.name,
            expected=expected,
            actual=[],
            error=str(exc),
            ok=sample.expect_error,
        )
    actual = [summarise_event(d) for d in decoded]
    ok = (
        not sample.expect_error
        and len(actual) == len(sample.expect)
        and all(_matches(e, a) for e, a in zip(sample.expect, actual, strict=True))
    )
    return SampleResult(profile_id=profile.id, sample=sample.name, expected=expected, actual=actual, ok=ok)


def check_profile(profile: DeviceProfile) -> list[SampleResult]:
    return [run_sample(profile, s) for s in profile.samples]


def profile_warnings(profile: DeviceProfile) -> list[str]:
    """What the installed transports say about a profile (`sosbridge.profile_checks` entry points, each
    `check(profile) -> list[str]`): e.g. that no transport can ever deliver a frame to it."""
    from bridge.infra.plugins import load_group

    return [str(w) for plugin in load_group("sosbridge.profile_checks") for w in plugin.obj(profile)]
