"""A device type is data end to end (issue 22 item 4, docs/devices/index.md): a `{scheme}` level in an MQTT
profile's match.topic is subscribed to and binds that level to the device's identifier of that scheme.

The Shelly story runs as an integrator would: a profile file in a temp SOSBRIDGE_PROFILE_DIRS, `sosbridge
serve` and `sosbridge receiver` processes, `sosbridge devices add`, a real Mosquitto, no Python written.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from bridge.core.model import Device
from bridge.devices.profiles import DeviceProfile, ProfileRegistry, topic_bindings, topic_filter
from bridge.ingress.binding import BindingError, Claim, bound_schemes, choose_profile
from device_adapters.mqtt import topics
from simulator.devices.mqtt import MqttPublisher
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import sosbridge_cmd, start_bridge_process, start_receiver_process

SHELLY = """\
version: 1
id: shelly-button1
vendor: Shelly
model: Button1
transport: mqtt
decoder: json
match: {topic: "shellies/{shelly}/input_event/0"}
kinds: [sos]
mappings:
  - when: [{field: event, equals: L}]
    kind: sos
ignore:
  - [{field: event, in: [S, SS, SSS]}]
"""
TOPIC = "shellies/shellybutton1-A4CF12F45678/input_event/0"


def shelly_registry(tmp_path: Path) -> ProfileRegistry:
    (tmp_path / "shelly-button1.yaml").write_text(SHELLY)
    return ProfileRegistry.load([tmp_path])


# -- pure -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("pattern", "topic", "bound"), [
    ("shellies/{shelly}/input_event/0", TOPIC, {"shelly": "shellybutton1-A4CF12F45678"}),
    ("shellies/{shelly}/input_event/0", "shellies/x/input_event/1", None),
    ("shellies/{shelly}/input_event/0", "shellies//input_event/0", None),  # an empty level names nobody
    ("shellies/+/input_event/0", TOPIC, {}),  # + matches without binding
    ("home/{site}/#", "home/flat-2/panic/now", {"site": "flat-2"}),
    ("a/{x}/{x}", "a/1/2", None),  # one scheme twice must name one value
], ids=str)
def test_topic_bindings(pattern: str, topic: str, bound: dict[str, str] | None) -> None:
    assert topic_bindings(pattern, topic) == bound


def test_profile_topics_are_subscribed_and_routed(tmp_path: Path) -> None:
    registry = shelly_registry(tmp_path)
    subs = topics.subscriptions(("zigbee2mqtt",), registry)
    assert topic_filter("shellies/{shelly}/input_event/0") in subs
    assert subs[: len(topics.builtin_subscriptions())] == topics.builtin_subscriptions()
    route = topics.route(TOPIC, ("zigbee2mqtt",), registry)
    assert route is not None and (route.kind, route.scheme, route.value) == (
        "profile", "shelly", "shellybutton1-A4CF12F45678")
    assert topics.route("shellies/shellybutton1-A4CF12F45678/announce", ("zigbee2mqtt",), registry) is None
    # The built-in families are unchanged.
    z2m = topics.route("zigbee2mqtt/fob", ("zigbee2mqtt",), registry)
    assert z2m is not None and z2m.kind == "z2m"


def test_a_profile_topic_under_a_built_in_family_adds_no_second_subscription() -> None:
    profile = DeviceProfile.model_validate({
        "version": 1, "id": "z2m-bound", "vendor": "x", "model": "y", "transport": "mqtt", "kinds": ["sos"],
        "match": {"topic": "zigbee2mqtt/{z2m_name}/action"}})
    assert topics.subscriptions(("zigbee2mqtt",), ProfileRegistry({"z2m-bound": profile}, {})) == \
        topics.builtin_subscriptions()


def test_the_bound_level_must_name_the_device(tmp_path: Path) -> None:
    registry = shelly_registry(tmp_path)
    device = Device(device_id="b1", profile_id="shelly-button1", identifiers={"shelly": "shellybutton1-A4CF12F45678"})
    claim = Claim("mqtt")
    assert choose_profile(registry, device, claim, {"topic": TOPIC}).id == "shelly-button1"
    with pytest.raises(BindingError) as refused:
        choose_profile(registry, device, claim, {"topic": "shellies/shellybutton1-000000000000/input_event/0"})
    assert refused.value.code == "wrong_topic"


def test_a_broken_template_is_refused() -> None:
    with pytest.raises(ValueError, match="whole-level"):
        DeviceProfile.model_validate({"version": 1, "id": "bad", "vendor": "x", "model": "y", "transport": "mqtt",
                                      "kinds": ["sos"], "match": {"topic": "shellies/pre-{shelly}/x"}})


def test_bound_schemes(tmp_path: Path) -> None:
    schemes = bound_schemes(shelly_registry(tmp_path))
    assert {"shelly", "z2m", "deveui", "msisdn", "watch"} <= schemes and "sheely" not in schemes


# -- the command line -------------------------------------------------------------------------------------
def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sosbridge_cmd(*args), capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "250", **(env or {})})


def test_profiles_check_warns_when_no_transport_delivers(tmp_path: Path) -> None:
    unreachable = tmp_path / "shelly-plus.yaml"
    unreachable.write_text(SHELLY.replace("shellies/{shelly}/input_event/0", "shellies/+/input_event/0")
                           .replace("id: shelly-button1", "id: shelly-plus"))
    done = run("profiles", "check", str(unreachable))
    assert "no transport delivers frames on 'shellies/+/input_event/0'" in done.stdout
    (tmp_path / "ok.yaml").write_text(SHELLY)
    assert "no transport delivers" not in run("profiles", "check", str(tmp_path / "ok.yaml")).stdout


def test_serve_refuses_a_profile_file_that_does_not_load(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "shelly-button1.yaml").write_text(SHELLY.replace("kinds: [sos]", "kinds: [sos, not_a_kind]"))
    done = run("serve", env={"SOSBRIDGE_PROFILE_DIRS": str(profiles), "SOSBRIDGE_DB": str(tmp_path / "b.db"),
                             "SOSBRIDGE_DATA_DIR": str(tmp_path), "SOSBRIDGE_HTTP_PORT": str(free_port()),
                             "SOSBRIDGE_MQTT_URL": "", "SOSBRIDGE_COAP_ENABLED": "false"})
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "SOSBRIDGE_PROFILE_DIRS" in lines[0] and "shelly-button1.yaml" in lines[0]


def test_devices_add_warns_about_a_scheme_nobody_binds(tmp_path: Path) -> None:
    env = {"SOSBRIDGE_DB": str(tmp_path / "b.db"), "SOSBRIDGE_DATA_DIR": str(tmp_path)}
    typo = run("devices", "add", "b0", "--identifier", "sheely=shellybutton1-A4CF12F45678", env=env)
    assert typo.returncode == 0 and "identifier scheme 'sheely'" in typo.stderr
    fine = run("devices", "add", "b1", "--profile", "shelly-button1", "--identifier",
               "shelly=shellybutton1-A4CF12F45678", env=env)
    assert fine.returncode == 0 and "warning" not in fine.stderr


# -- end to end: the Shelly story with YAML alone -----------------------------------------------------------
@pytest.mark.timeout(90)
def test_shelly_long_press_reaches_the_platform_with_yaml_alone(tmp_path: Path, mosquitto_url: str) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "shelly-button1.yaml").write_text(SHELLY)
    secret, token, admin = secrets.token_hex(8), secrets.token_hex(8), secrets.token_hex(8)
    bport, rport = free_port(), free_port()
    env = {
        "SOSBRIDGE_DB": str(tmp_path / "bridge.db"), "SOSBRIDGE_DATA_DIR": str(tmp_path),
        "SOSBRIDGE_PLATFORM_URL": f"http://127.0.0.1:{rport}/contacts", "SOSBRIDGE_PLATFORM_SECRET": secret,
        "SOSBRIDGE_PLATFORM_TOKEN": token, "SOSBRIDGE_ADMIN_TOKEN": admin, "SOSBRIDGE_MQTT_URL": mosquitto_url,
        "SOSBRIDGE_MQTT_CLIENT_ID": f"shelly-e2e-{secrets.token_hex(4)}", "SOSBRIDGE_PROFILE_DIRS": str(profiles),
        "SOSBRIDGE_COAP_ENABLED": "false", "SOSBRIDGE_RETRY_BASE_S": "0.1", "SOSBRIDGE_RETRY_MAX_S": "0.5",
    }
    added = run("devices", "add", "b1", "--profile", "shelly-button1", "--identifier",
                "shelly=shellybutton1-A4CF12F45678", env=env)
    assert added.returncode == 0, added.stderr
    receiver = start_receiver_process(rport, secret, tmp_path / "contacts.jsonl", f"http://127.0.0.1:{bport}",
                                      token, tmp_path / "rx.log")
    bridge = start_bridge_process(env, bport, tmp_path / "bridge.log")
    try:
        # The start-up summary says "MQTT <url>: connected" once the subscriptions are in place.
        wait_until(lambda: ": connected" in (tmp_path / "bridge.log").read_text())
        publisher = MqttPublisher(mosquitto_url)
        publisher.publish_many([(TOPIC, b'{"event":"S","event_cnt":6}', False),
                                (TOPIC, b'{"event":"L","event_cnt":7}', False)])
        contacts = wait_until(lambda: httpx.get(f"{receiver.url}/contacts", timeout=5).json())
        contact = contacts[0]["contact"]
        assert contact["kind"] == "sos" and contact["device"]["id"] == "b1"
        assert contact["attributes"] == {} or "event" not in contact["attributes"]
        time.sleep(0.5)  # the short press before it raised nothing
        assert len(httpx.get(f"{receiver.url}/contacts", timeout=5).json()) == 1
    finally:
        bridge.stop()
        receiver.stop()


def wait_until(fn, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := fn():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")
