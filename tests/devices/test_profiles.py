"""Every device profile's samples, run through its decoder; plus the profile rules themselves.

The samples live in the profile files (hardware/profiles/*.yaml), each citing its source.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.devices.profiles import (
    BUILTIN_PROFILE_DIR,
    ProfileError,
    ProfileRegistry,
    load_profile_file,
)
from bridge.devices.samples import run_sample

REGISTRY = ProfileRegistry.load()
CASES = [(p, s) for p in REGISTRY.profiles.values() for s in p.samples]


def test_every_builtin_profile_loads() -> None:
    files = sorted(BUILTIN_PROFILE_DIR.glob("*.yaml"))
    assert len(REGISTRY.profiles) == len(files) >= 10
    for f in files:
        load_profile_file(f)  # raises on any invalid file


def test_every_profile_has_cited_samples() -> None:
    for profile in REGISTRY.profiles.values():
        assert profile.samples, f"{profile.id} has no samples"
        assert all(s.source.strip() for s in profile.samples)


@pytest.mark.parametrize(("profile", "sample"), CASES, ids=[f"{p.id}:{s.name}" for p, s in CASES])
def test_profile_sample(profile, sample) -> None:  # type: ignore[no-untyped-def]
    result = run_sample(profile, sample)
    assert result.ok, f"expected {result.expected}, got {result.actual} ({result.error})"


def test_version_is_required(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("id: x1\nvendor: v\nmodel: m\ntransport: mqtt\nkinds: [sos]\n")
    with pytest.raises(ProfileError, match="version"):
        load_profile_file(f)


def test_mapping_must_emit_a_declared_kind(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(
        "version: 1\nid: x1\nvendor: v\nmodel: m\ntransport: mqtt\nkinds: [sos]\n"
        "mappings:\n  - when: [{field: action, equals: fall}]\n    kind: fall\n"
    )
    with pytest.raises(ProfileError, match="does not declare"):
        load_profile_file(f)


def test_extra_directory_overrides_builtin(tmp_path: Path) -> None:
    original = REGISTRY.get("sosbridge-http-wearable")
    assert original is not None
    override = original.model_copy(update={"model": "site override", "samples": []})
    (tmp_path / "override.yaml").write_text(
        __import__("yaml").safe_dump(override.model_dump(mode="json", exclude_none=True))
    )
    registry = ProfileRegistry.load([tmp_path])
    assert registry.get("sosbridge-http-wearable").model == "site override"  # type: ignore[union-attr]
    assert registry.origins["sosbridge-http-wearable"] == tmp_path / "override.yaml"


def test_a_profile_names_a_transport_an_installed_adapter_carries(tmp_path: Path) -> None:
    """No closed list of transports: adapters register theirs (bridge/devices/transports.py). A profile for a
    transport nobody carries, or an ack its transport cannot give, is refused when loaded, naming what is."""
    base = BUILTIN_PROFILE_DIR / "sosbridge-mqtt-button.yaml"
    text = base.read_text(encoding="utf-8")
    pigeon = tmp_path / "pigeon.yaml"
    pigeon.write_text(text.replace("transport: mqtt", "transport: pigeon"), encoding="utf-8")
    with pytest.raises(ProfileError, match=r"transport 'pigeon' is not carried by any installed adapter.*mqtt"):
        load_profile_file(pigeon)
    wrong_ack = tmp_path / "wrong-ack.yaml"
    wrong_ack.write_text(text.replace("ack: mqtt_status", "ack: dc09_ack"), encoding="utf-8")
    with pytest.raises(ProfileError, match=r"ack 'dc09_ack' is not one the mqtt transport gives"):
        load_profile_file(wrong_ack)
