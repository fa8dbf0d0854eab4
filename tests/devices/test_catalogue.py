"""The device catalogue generated from the ecosystems (issue 22 item 5, docs/devices/catalogue.md).

The committed profiles must be exactly what the generators make of the committed, cited extracts (no
network: the extracts are the generators' input); the selection rule picks what it should; the zigbee2mqtt
fallback raises for a device registered without a profile and names the profile that would fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from catalogue import lorawan, z2m

from bridge.core.model import AlertKind, Device
from bridge.devices.decoding import Frame, decode_frame
from bridge.devices.profiles import ProfileRegistry
from bridge.infra.metrics import Metrics
from bridge.ingress.binding import Claim
from bridge.ingress.ingress import Ingress
from bridge.store.sqlite import SqliteStore
from tests.support.paths import ROOT

PROFILES = ProfileRegistry.load()


def test_committed_zigbee2mqtt_profiles_are_what_the_generator_makes() -> None:
    extract = json.loads(z2m.EXTRACT.read_text(encoding="utf-8"))
    wanted = z2m.generate(extract, z2m.curated_models())
    assert wanted == z2m.committed(), "stale: run PYTHONPATH=scripts .venv/bin/python -m catalogue.z2m"
    assert extract["version"] and extract["licence"] == "MIT"
    assert z2m.EXTRACT.with_name("zigbee-herdsman-converters.LICENSE").read_text().startswith("MIT License")


def test_committed_lorawan_profiles_are_what_the_generator_makes() -> None:
    extract = json.loads(lorawan.EXTRACT.read_text(encoding="utf-8"))
    assert lorawan.generate(extract) == lorawan.committed(), \
        "stale: run PYTHONPATH=scripts .venv/bin/python -m catalogue.lorawan"
    assert all(d["source"]["path"] and len(d["source"]["commit"]) == 40 for d in extract["devices"])


def test_every_generated_profile_loads_and_cites_its_release() -> None:
    generated = [p for pid, p in PROFILES.profiles.items()
                 if PROFILES.origins[pid].read_text(encoding="utf-8").startswith(z2m.GENERATED)
                 or PROFILES.origins[pid].read_text(encoding="utf-8").startswith(lorawan.GENERATED)]
    assert len(generated) >= 30
    for profile in generated:
        assert profile.samples and all(s.source for s in profile.samples), profile.id


@pytest.mark.parametrize(("definition", "picked"), [
    ({"model": "k", "vendor": "v", "description": "Keypad", "actions": ["arm_all_zones", "emergency"],
      "binaries": []}, {"actions": {"emergency": "sos"}, "states": [], "press": []}),
    ({"model": "k", "vendor": "v", "description": "Key fob", "actions": ["panic", "disarm"], "binaries": []},
     {"actions": {"panic": "panic"}, "states": [], "press": []}),
    ({"model": "b", "vendor": "v", "description": "SOS button", "actions": [],
      "binaries": [{"property": "sos", "value_on": True, "value_off": False}]},
     {"actions": {}, "states": [{"property": "sos", "value_on": True, "value_off": False}], "press": []}),
    ({"model": "b", "vendor": "v", "description": "Smart emergency button", "actions": ["off", "single", "hold"],
      "binaries": []}, {"actions": {}, "states": [], "press": ["single", "hold"]}),
    # Electrical protections and sirens are not calls for help.
    ({"model": "p", "vendor": "v", "description": "Smart plug", "actions": [],
      "binaries": [{"property": "emergency_overcurrent", "value_on": True, "value_off": False}]}, None),
    ({"model": "s", "vendor": "v", "description": "Indoor siren", "actions": [],
      "binaries": [{"property": "alarm", "value_on": True, "value_off": False}]}, None),
], ids=lambda v: str(v)[:50])
def test_the_selection_rule(definition: dict[str, object], picked: dict[str, object] | None) -> None:
    assert z2m.select(definition) == picked


def test_a_registered_device_without_a_profile_still_raises_and_is_told_what_fits() -> None:
    fallback = PROFILES.get(z2m.FALLBACK_ID)
    assert fallback is not None and fallback.fallback
    assert PROFILES.fallback_for("mqtt", {"ecosystem": "zigbee2mqtt", "topic": "zigbee2mqtt/fob"}) is fallback
    meta = {"ecosystem": "zigbee2mqtt", "subtopic": "", "topic": "zigbee2mqtt/fob"}
    [press] = decode_frame(Frame(payload=b'{"action": "panic", "linkquality": 80}', meta=meta), fallback)
    assert press.kind == AlertKind.panic
    fits = press.attributes["suggested_profiles"]
    assert "z2m-adeo-ldsenk09" in fits and "z2m-hive-keypad001" in fits
    # With zigbee2mqtt's device information, the model names the one profile that fits (a curated one here).
    informed = b'{"action": "emergency", "device": {"model": "TS0215A_sos", "friendlyName": "fob"}}'
    [sos] = decode_frame(Frame(payload=informed, meta=meta), fallback)
    assert sos.kind == AlertKind.sos and sos.attributes["suggested_profiles"] == ["zigbee2mqtt-tuya-ts0215a-sos"]
    [state] = decode_frame(Frame(payload=b'{"sos": true}', meta=meta), fallback)
    assert state.state_on is True and "z2m-owon-pb206" in state.attributes["suggested_profiles"]


async def test_the_fallback_through_the_ingress(tmp_path: Path) -> None:
    from bridge.alerts.pipeline import Pipeline
    from bridge.core.events import StatusBus

    store = SqliteStore(tmp_path / "c.db")
    await store.open()
    try:
        metrics = Metrics()
        ingress = Ingress(store, Pipeline(store, StatusBus(), metrics, kind_policy=PROFILES.allowed_kinds),
                          PROFILES, metrics)
        await store.put_device(Device(device_id="fob", identifiers={"z2m": "fob"}))  # no profile named
        meta = {"ecosystem": "zigbee2mqtt", "subtopic": "", "topic": "zigbee2mqtt/fob"}
        receipt = await ingress.receive(Frame(payload=b'{"action": "emergency"}', meta=meta),
                                        Claim("mqtt", identifiers=(("z2m", "fob"),)))
        assert receipt.status == "accepted" and receipt.profile is not None
        assert receipt.profile.id == z2m.FALLBACK_ID
        alert = await store.open_alert_for_device("fob")
        assert alert is not None and alert.kind == AlertKind.sos
        assert "z2m-centralite-3400-d" in alert.attributes["suggested_profiles"]
    finally:
        await store.close()


def test_the_device_list_shows_the_catalogue_size() -> None:
    builtin = list((ROOT / "hardware" / "profiles").glob("*.yaml"))
    text = (ROOT / "docs" / "devices" / "list.md").read_text(encoding="utf-8")
    assert f"**The catalogue has {len(builtin)} device profiles**" in text
